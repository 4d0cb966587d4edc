"""PNG plots from a run folder or a collected sweep table.

    python -m analysis.plot run outputs/llama70b_h100/<time>/        # roofline, operators, dashboard
    python -m analysis.plot dashboard RUN_DIR -o dashboard.png
    python -m analysis.plot roofline RUN_DIR
    python -m analysis.plot operators RUN_DIR
    python -m analysis.plot compare RUN_A RUN_B -o h100_vs_h200.png
    python -m analysis.plot latency sweep.parquet --slo-ttft 2 --slo-tpot 0.1   # rate sweep
    python -m analysis.plot knee sweep.parquet                                  # max_num_seqs sweep
    python -m analysis.plot pareto OUT/plan.parquet --slo-tpot 0.1              # a plan's Pareto plot

Sweep plots draw one line per combination of the other swept parameters (`--by` to choose).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.cli import run_cli
from analysis.runs import Run, read_sweep

RUN_PLOTS = ("roofline", "operators", "dashboard")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis.plot", description=__doc__.split("\n")[0])
    p.add_argument("kind", choices=["run", *RUN_PLOTS, "compare", "latency", "knee", "pareto"])
    p.add_argument("inputs", nargs="+", type=Path, help="run folder(s), a sweep .parquet or a plan.parquet")
    p.add_argument("-o", "--out", type=Path, default=None, help="PNG (a folder for `run`)")
    p.add_argument("--by", nargs="*", default=None, help="sweep columns that split lines")
    p.add_argument("--rate", default="workload.rate", help="rate column of a latency sweep")
    p.add_argument("--batch", default="scheduler.max_num_seqs", help="batch column of a knee sweep")
    p.add_argument("--slo-ttft", type=float, default=None, help="seconds, drawn as a line")
    p.add_argument("--slo-tpot", type=float, default=None, help="seconds, drawn as a line")
    p.add_argument("--title", default="")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from analysis import plots_plan, plots_run, plots_sweep  # matplotlib: the `plots` extra

    run_plots = {"roofline": plots_run.roofline, "operators": plots_run.operator_time,
                 "dashboard": plots_run.dashboard}
    first = args.inputs[0]
    if args.kind == "run":
        folder = args.out or first / "plots"
        run = Run(first)
        written = [fn(run, folder / f"{name}.png") for name, fn in run_plots.items()]
    elif args.kind in run_plots:
        written = [run_plots[args.kind](Run(first), args.out or first / f"{args.kind}.png")]
    elif args.kind == "pareto":
        out = args.out or first.with_name("pareto.png")
        written = [plots_plan.pareto(first, out, args.slo_tpot, title=args.title)]
    elif args.kind == "compare":
        out = args.out or Path("compare.png")
        written = [plots_sweep.compare_runs([Run(p) for p in args.inputs], out, title=args.title)]
    else:
        table, swept = read_sweep(first)
        x = args.rate if args.kind == "latency" else args.batch
        if x not in table:
            print(f"error: {first} has no column {x!r}; swept: {', '.join(swept)}", file=sys.stderr)
            return 2
        by = args.by if args.by is not None else [c for c in swept if c != x]
        out = args.out or first.with_name(f"{first.stem}_{args.kind}.png")
        if args.kind == "latency":
            written = [plots_sweep.latency_throughput(table, out, x, by, args.slo_ttft, args.slo_tpot, args.title)]
        else:
            written = [plots_sweep.batch_knee(table, out, x, by, args.slo_tpot, args.title)]
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
