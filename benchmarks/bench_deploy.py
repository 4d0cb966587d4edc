"""Deployment speed: a P/D run against the colocated run of the same GPUs and traffic.

    python benchmarks/bench_deploy.py                  # pd_llama70b_h100, 10,000 requests
    python benchmarks/bench_deploy.py --requests 2000

Target: the 1 prefill : 3 decode run of pd_llama70b_h100 (16 H100, 10,000 requests) takes
at most 2x the wall time of the colocated TP4 x 4 run of the same requests. Figures vary with
the machine's load: run it a few times.
"""

from __future__ import annotations

import argparse

from harness import compose_scenario, print_figures, time_runs

TARGET_RATIO = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    common = [f"workload.num_requests={args.requests}", "deployment.compare={}"]
    colocated = time_runs(compose_scenario("pd_llama70b_h100", [*common, "deployment=colocated"]), args.repeat)
    print_figures("pd_llama70b_h100 colocated TP4 x 4", colocated)
    print()
    pd = time_runs(compose_scenario("pd_llama70b_h100", common), args.repeat)
    print_figures("pd_llama70b_h100 1 prefill : 3 decode", pd)
    ratio = pd.wall_s / colocated.wall_s
    print(f"\nP/D / colocated wall time: {ratio:.2f} (target <= {TARGET_RATIO:.0f}: {'met' if ratio <= TARGET_RATIO else 'NOT met'})")


if __name__ == "__main__":
    main()
