"""Memory per arrival: peak resident memory and speed of runs with millions of arrivals.

    python benchmarks/bench_memory.py overload                # 10,000,000 arrivals, one replica
    python benchmarks/bench_memory.py overload --arrivals 1000000
    python benchmarks/bench_memory.py replicas                # 1,000,000 requests, 16 replicas
    python benchmarks/bench_memory.py unbounded               # 10,000,000 arrivals, no queue limit
    python benchmarks/bench_memory.py unbounded --arrivals 200000
    python benchmarks/bench_memory.py pd_unbounded            # 200,000 arrivals, P/D pools, no limit

`overload`: Llama-3.1-8B on one H100 offered 100,000 req/s, far beyond what it serves, with
an admission limit of 1,000 waiting requests (`scheduler.max_waiting_requests`): nearly every
arrival is refused at once, so the run is the arrival path itself (workload streamed in NumPy
chunks, routing, refusal, the request row spooled to requests.parquet in Arrow batches).
Target: 10 million arrivals under 1 GB peak RSS.

`unbounded`: the same offered load without an admission limit, as vLLM's API server has none:
every arrival joins the waiting queue, and the run stops at a horizon just after the last one
(arrivals / 100,000 req/s), so at the end nearly every request is still waiting and is
reported unfinished. The run is the arrival path plus the waiting queue itself (sim.core.
waiting_queue). Target: 10 million arrivals under 1 GB peak RSS.

`pd_unbounded`: `unbounded` on Llama-3.1-70B behind the P/D proxy (one prefill and three
decode TP4 instances on H100, deployment pd_1p3d_h100), 200,000 arrivals by default: the proxy
keeps every client request in flight as an object, so this one still grows by hundreds of
bytes per arrival.

`replicas`: Llama-3.1-8B on H100, 16 replicas behind a round-robin router at 256 req/s (16 per
replica, the llama8b_h100 scenario's load each), every request finished. Targets:
100 s of CPU and 1 GB peak RSS; the CPU time is mostly the scheduler's and cost model's hot
path, one step at a time.

All write every output (requests, steps, timeline) into a temporary folder. Peak RSS is the
whole process's (Python, NumPy, pyarrow and Hydra take about 120 MB before the run); "growth"
is the peak less what the process held just before the run started.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from harness import compose_scenario

from sim.config.build import build_run_spec, resolved_config
from sim.run import simulate

CASES = {
    "overload": ("llama8b_h100", 10_000_000, ["workload.rate=100000", "scheduler.max_waiting_requests=1000"]),
    "replicas": ("llama8b_h100", 1_000_000, ["parallel.replicas=16", "workload.rate=256"]),
    "unbounded": ("llama8b_h100", 10_000_000, ["workload.rate=100000"]),
    "pd_unbounded": ("llama70b_h100", 200_000, ["deployment=pd_1p3d_h100", "workload.rate=100000"]),
}
# Cases stopped at a horizon: the time of the last arrival at the offered rate.
HORIZON_RATE = {"unbounded": 100_000, "pd_unbounded": 100_000}
TARGET_MB = 1024
TARGET_CPU_S = {"replicas": 100.0}


def _rss_mb() -> float:
    """Resident memory now (Linux /proc), MB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("case", choices=sorted(CASES))
    parser.add_argument("--arrivals", type=int, default=None, help="requests offered (default: the case's)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args()
    scenario, default_n, overrides = CASES[args.case]
    n = args.arrivals or default_n
    if args.case in HORIZON_RATE:
        overrides = [*overrides, f"horizon_s={n / HORIZON_RATE[args.case]:g}"]
    cfg = compose_scenario(scenario, [f"workload.num_requests={n}", *overrides, *args.overrides])
    spec = build_run_spec(cfg)
    before_mb = _rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        start, start_cpu = time.perf_counter(), time.process_time()
        result = simulate(spec, Path(tmp), resolved_config(cfg))
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        sizes = {p.name: p.stat().st_size for p in Path(tmp).glob("*.parquet")}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    requests, manifest = result.summary["requests"], result.manifest
    arrivals, steps, events = manifest["arrivals"], manifest["engine_steps"], manifest["events_simulated"]
    growth = peak_mb - before_mb
    print(f"case                {args.case}: {scenario} {' '.join(overrides + args.overrides)}")
    print(f"arrivals            {arrivals:,} (finished {requests['finished']:,}, rejected {requests['rejected']:,},"
          f" unfinished {requests['unfinished']:,})")
    print(f"wall time           {wall:,.1f} s; CPU time {cpu:,.1f} s")
    print(f"arrivals/s          {arrivals / cpu:,.0f} per CPU second ({cpu / arrivals * 1e6:,.2f} us per arrival)")
    print(f"events simulated    {events:,}: {events / cpu:,.0f} events/s (CPU)")
    print(f"engine steps        {steps:,}: {cpu / max(steps, 1) * 1e6:,.1f} us of CPU per step, arrivals included")
    print(f"peak RSS            {peak_mb:,.0f} MB ({before_mb:,.0f} MB before the run; growth {growth:,.0f} MB ="
          f" {growth * 2**20 / max(arrivals, 1):,.1f} bytes per arrival)")
    print("outputs             " + ", ".join(f"{k} {v / 2**20:,.1f} MB" for k, v in sorted(sizes.items())))
    met = peak_mb < TARGET_MB and cpu < TARGET_CPU_S.get(args.case, float("inf"))
    cpu_target = f", <{TARGET_CPU_S[args.case]:.0f} s CPU" if args.case in TARGET_CPU_S else ""
    print(f"target (<1 GB peak RSS{cpu_target}): {'met' if met else 'NOT met'}")
    sys.exit(0)


if __name__ == "__main__":
    main()
