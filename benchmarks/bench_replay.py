"""Trace-replay speed: the whole Azure conversation trace (19,366 requests) on llama70b_h100.

    python benchmarks/bench_replay.py
    python benchmarks/bench_replay.py --scenario mooncake_llama8b_h200 --repeat 1

Target (issue: real traffic): the full Azure conversation replay in under 10 s wall on one
core, every output written. Figures vary with the machine's load: run it a few times.
"""

from __future__ import annotations

import argparse

from harness import compose_scenario, print_figures, time_runs

TARGET_S = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="azure_conv_llama70b_h100")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args()
    timing = time_runs(compose_scenario(args.scenario, args.overrides), args.repeat)
    print_figures(args.scenario, timing)
    print(f"target (<{TARGET_S:.0f} s): {'met' if timing.wall_s < TARGET_S else 'NOT met'}")


if __name__ == "__main__":
    main()
