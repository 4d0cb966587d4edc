"""Sweep speed: 1,000 configurations of Llama-3.1-8B on one H100, through the in-process probe
path a capacity search and a plan use (`sim.sweep.probe`), on this machine's cores.

    python benchmarks/bench_sweep.py                    # 10 rates x 10 max_num_seqs x 10 seeds
    python benchmarks/bench_sweep.py --requests 300 --jobs 2
    python benchmarks/bench_sweep.py --rates 4 --batch-sizes 5 --seeds 5 --requests 100

Each worker composes the base config once (`compose_config`); each configuration is that
config with its own `scheduler.max_num_seqs` (`compose_variant`: the override applied to a copy,
no composition), its rate and seed (`with_rate`), simulated into a temporary folder with
requests.parquet and summary written and read back, and checked against the SLOs (TTFT p99
<= 2 s, TPOT p99 <= 100 ms), as a capacity probe is.

Target: 1,000 configurations in under 5 minutes wall on the project's 2-core machine. Wall time
depends on what else the machine runs; CPU time over the workers is what idle cores would take.
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor

TARGET_S = 300.0
BASE = ["+scenario=llama8b_h100"]
_base = None  # the worker's composed base config


def _start_worker() -> None:
    global _base
    from sim.sweep.probe import compose_config

    _base = compose_config(BASE)


def _run(point: tuple[float, int, int, int]) -> tuple[bool, int, int, float, float]:
    """One configuration: (meets the SLOs, events, engine steps, simulate s, CPU s)."""
    from sim.sweep.probe import Slo, compose_variant, run_probe

    rate, max_num_seqs, seed, requests = point
    start_cpu = time.process_time()
    cfg = compose_variant(_base, BASE, [f"scheduler.max_num_seqs={max_num_seqs}"])
    result = run_probe(cfg, rate, seed, requests, Slo(2.0, 0.1))
    cpu = time.process_time() - start_cpu
    return result.meets, result.events_simulated, result.engine_steps, result.simulate_s, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rates", type=int, default=10, help="rates 2, 4, ... req/s")
    parser.add_argument("--batch-sizes", type=int, default=10, help="max_num_seqs 16, 32, ...")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=100, help="requests per configuration")
    args = parser.parse_args()
    rates = [2.0 * (i + 1) for i in range(args.rates)]
    batch_sizes = [16 * (i + 1) for i in range(args.batch_sizes)]
    points = [(r, b, s, args.requests) for r, b, s in itertools.product(rates, batch_sizes, range(args.seeds))]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs, initializer=_start_worker) as pool:
        started = time.perf_counter()
        results = list(pool.map(_run, points, chunksize=4))
    wall = time.perf_counter() - start
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_all = children.ru_utime + children.ru_stime
    n = len(results)
    events = sum(r[1] for r in results)
    steps = sum(r[2] for r in results)
    simulate_s = sum(r[3] for r in results)
    cpu_configs = sum(r[4] for r in results)
    print(f"configurations      {n:,} ({args.rates} rates x {args.batch_sizes} max_num_seqs x {args.seeds} seeds,"
          f" {args.requests} requests each); {sum(r[0] for r in results):,} meet the SLOs")
    print(f"wall time           {wall:,.1f} s with {args.jobs} workers (pool start {started - start:.1f} s)")
    print(f"configs/s           {n / wall:,.2f} (wall)")
    print(f"CPU time            {cpu_all:,.1f} s in the workers, {cpu_configs / n * 1e3:,.0f} ms per configuration"
          f" ({simulate_s / n * 1e3:,.0f} ms of it simulating and writing)")
    print(f"events simulated    {events:,}: {events / cpu_configs:,.0f} events per CPU second"
          f" ({events / simulate_s:,.0f} per wall second inside the simulations)")
    print(f"engine steps        {steps:,}: {cpu_configs / steps * 1e6:,.1f} us of CPU per step, set-up and outputs"
          f" included ({simulate_s / steps * 1e6:,.1f} us wall)")
    print(f"on idle cores       about {cpu_all / args.jobs:,.0f} s wall (the workers' CPU time over {args.jobs} cores)")
    print(f"target (<{TARGET_S:.0f} s wall for 1,000): {'met' if n >= 1000 and wall < TARGET_S else 'NOT met' if n >= 1000 else 'n/a (fewer configurations)'}")


if __name__ == "__main__":
    main()
