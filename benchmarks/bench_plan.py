"""Plan speed: 24 candidates (4 GPUs x 2 precisions x 3 TP sizes) for Llama-3.1-70B chat,
from capacity searches to the ranked table, on this machine's cores.

    python benchmarks/bench_plan.py                 # the default plan settings (2 seeds)
    python benchmarks/bench_plan.py --jobs 2 -- --seeds 1

Target: under 5 minutes wall on the project's 2-core machine. Wall time depends on what else
the machine runs; the CPU time of the workers over the cores is what an idle machine would take.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from sim.plan.__main__ import main as plan_main

TARGET_S = 300.0
SPACE = ["+scenario=llama70b_h100", "--target-rate", "20", "--ttft-p99", "2", "--tpot-p99", "0.1",
         "--hardware", "h100_sxm,h200,b200,mi300x", "--precision", "bf16,fp8", "--tp", "2,4,8"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("extra", nargs="*", help="more sim.plan flags, after --")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "plan"
        start = time.perf_counter()
        stats: dict[str, float] = {}
        code = plan_main([*SPACE, "--jobs", str(args.jobs), "-o", str(out), *args.extra], stats=stats)
        wall = time.perf_counter() - start
        rows = pq.read_table(out / "plan.parquet").to_pylist() if code == 0 else []
    own = resource.getrusage(resource.RUSAGE_SELF)
    cpu = stats.get("cpu_s", 0.0) + own.ru_utime + own.ru_stime  # workers + this process
    probes = sum(r.get("probes") or 0 for r in rows)
    sized = sum(1 for r in rows if r.get("sizing") == "simulated")
    print(f"\ncandidates          {len(rows)} ({sum(r['status'] == 'ok' for r in rows)} with a capacity)")
    print(f"capacity probes     {probes:,} (sizing simulated for {sized} candidates)")
    print(f"wall time           {wall:,.1f} s with {args.jobs} workers")
    events, steps = int(stats.get("events_simulated", 0)), int(stats.get("engine_steps", 0))
    print(f"probes/s            {probes / wall:,.2f} (wall); {cpu / max(probes, 1) * 1e3:,.0f} ms of CPU per probe")
    print(f"events simulated    {events:,} ({events / max(cpu, 1e-9):,.0f} per CPU second); {steps:,} engine"
          f" steps, {cpu / max(steps, 1) * 1e6:,.1f} us of CPU each (set-up and outputs included)")
    print(f"CPU time            {cpu:,.1f} s in all (workers and this process) = {cpu / args.jobs:,.1f} s"
          f" per core (about the wall time on idle cores)")
    print(f"target (<{TARGET_S:.0f} s wall): {'met' if wall < TARGET_S else 'NOT met'}")


if __name__ == "__main__":
    main()
