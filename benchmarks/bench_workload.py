"""Workload generation speed: RequestSpecs drawn for a Poisson chat workload, no simulation.

    python benchmarks/bench_workload.py                  # 100,000 requests, best of 5
    python benchmarks/bench_workload.py --requests 1000000 --repeat 3

Target: 100,000 requests in under 1 s on one core (the workload must never be what a run
waits for). Draws are vectorised in chunks of 16,384 and yielded one by one; each request
is one arrival event of the simulation, so requests/s here bounds a run's arrival rate.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from sim.workload import LengthSpec, WorkloadSpec, build_requests

TARGET_S = 1.0
CHAT = WorkloadSpec(
    name="chat", arrival="poisson", rate=10.0,
    prompt_tokens=LengthSpec(kind="lognormal", mean=1000, std=800, min=16, max=8192),
    output_tokens=LengthSpec(kind="lognormal", mean=250, std=200, min=4, max=2048),
)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cfg = dataclasses.replace(CHAT, num_requests=args.requests)
    walls, cpus = [], []
    for _ in range(args.repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        n = sum(1 for _ in build_requests(cfg, np.random.SeedSequence(0)))
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    assert n == args.requests, n
    wall, cpu = min(walls), min(cpus)
    print(f"requests            {n:,} (Poisson, log-normal chat lengths)")
    print(f"wall time           {wall:.3f} s (best of {args.repeat}: {', '.join(f'{w:.3f}' for w in walls)})")
    print(f"CPU time            {cpu:.3f} s")
    print(f"events/s            {n / cpu:,.0f} arrival events generated per CPU second")
    print(f"us per request      {cpu / n * 1e6:.2f} (CPU; no engine steps: generation only)")
    print(f"target (<{TARGET_S:.0f} s for 100,000): {'met' if cpu * 100_000 / n < TARGET_S else 'NOT met'}")


if __name__ == "__main__":
    main()
