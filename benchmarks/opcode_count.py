"""Python opcodes one run executes, by function: a speed figure that the machine's load does not move.

    python benchmarks/opcode_count.py                                   # llama70b_h100, 300 requests
    python benchmarks/opcode_count.py --requests 300 scheduler.enable_prefix_caching=false
    python benchmarks/opcode_count.py --source DIR                      # another checkout (before/after)

CPU time on a shared machine varies by 10% or more from run to run, more than most changes to
the hot path are worth. The number of Python opcodes a run executes is the same on every run
of the same code and seed; it counts the interpreter's work, not what C functions (dict and
OrderedDict operations, NumPy, pyarrow) do inside one opcode, so compare it with CPU times,
not instead of them. The run is traced (`sys.settrace` opcode events): about 50x slower than
untraced, hence the small default. `--source DIR` counts another checkout's code (its `sim`
package and `benchmarks/harness.py`), for before/after comparisons.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="llama70b_h100")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--top", type=int, default=15, help="functions listed, most opcodes first")
    parser.add_argument("--source", type=Path, default=None, help="checkout whose code is counted")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args()
    if args.source is not None:
        sys.path[:0] = [str(args.source.resolve()), str(args.source.resolve() / "benchmarks")]
    from harness import compose_scenario

    from sim.config.build import build_run_spec, resolved_config
    from sim.run import simulate

    cfg = compose_scenario(args.scenario, [f"workload.num_requests={args.requests}", *args.overrides])
    spec, resolved = build_run_spec(cfg), resolved_config(cfg)
    with tempfile.TemporaryDirectory() as tmp:  # first run: imports and caches out of the count
        simulate(spec, Path(tmp), resolved)
    by_function: collections.Counter[tuple[str, str]] = collections.Counter()

    def tracer(frame, event, arg):
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            by_function[(code.co_filename, code.co_name)] += 1
        return tracer

    with tempfile.TemporaryDirectory() as tmp:
        sys.settrace(tracer)
        try:
            result = simulate(spec, Path(tmp), resolved)
        finally:
            sys.settrace(None)
    total = sum(by_function.values())
    steps = result.manifest["engine_steps"]
    print(f"scenario            {args.scenario} ({args.requests:,} requests) {' '.join(args.overrides)}")
    print(f"code                {Path(sys.modules['sim'].__file__).parent.parent}")
    print(f"opcodes             {total:,} ({total / max(steps, 1):,.0f} per engine step, {steps:,} steps)")
    for (filename, name), n in by_function.most_common(args.top):
        where = filename.split("/sim/", 1)[-1] if "/sim/" in filename else Path(filename).name
        print(f"  {n / total:6.1%} {n:>12,}  {where}:{name}")


if __name__ == "__main__":
    main()
