"""Simulator speed: wall time, simulated requests/s and events/s, peak memory.

    python benchmarks/bench_sim.py                      # llama70b_h100, 10,000 requests
    python benchmarks/bench_sim.py --requests 50000 --scenario llama8b_h100

Target (issue: speed): 10,000 requests of llama70b_h100 in under 5 s wall on one core, with
peak resident memory under 1 GB. Figures vary with the machine's load: run it a few times.
"""

from __future__ import annotations

import argparse

from harness import compose_scenario, print_figures, time_runs

TARGET_S, TARGET_MB = 5.0, 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="llama70b_h100")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args()
    cfg = compose_scenario(args.scenario, [f"workload.num_requests={args.requests}", *args.overrides])
    timing = time_runs(cfg, args.repeat)
    peak_mb = print_figures(args.scenario, timing)
    met = timing.wall_s < TARGET_S and peak_mb < TARGET_MB
    print(f"target (<{TARGET_S:.0f} s, <1 GB): {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
