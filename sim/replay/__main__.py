"""`python -m sim.replay RUN [options] [key=value ...]`: check the simulator against a real run.

RUN is a request file (the measurement set's `requests_<run>.jsonl[.gz]`, a
`vllm bench serve --save-result --save-detailed` JSON, or a CSV) or a folder of
`requests_<run>.jsonl` files with `--run`. Engine settings come from the meta.json next to the
file, then from the options below, then from Hydra-style `key=value` overrides (any key of
`python -m sim`). Writes into --out: comparison.json, cdf.png, replayed_requests.csv and the
simulator's own outputs under sim/. Exit codes: 0 done; 2 bad input, one `error:` line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn, Sequence

from sim.errors import SimError
from sim.replay.plot import write_cdf_plot
from sim.replay.readers import FORMATS
from sim.replay.replay import locate, replay
from sim.replay.report import format_table, write_comparison
from sim.replay.settings import EngineSettings


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, as every other bad input
        print(f"error: {message} (see python -m sim.replay --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m sim.replay", description=__doc__.split("\n\n")[0])
    p.add_argument("path", type=Path, help="request file, or a folder of requests_<run>.jsonl files")
    p.add_argument("overrides", nargs="*", help="Hydra-style overrides, e.g. cost.step_overhead_ms=3")
    p.add_argument("--format", default="auto", choices=FORMATS, help="input format (default: from the extension)")
    p.add_argument("--run", help="run name (meta.json runs[]; default: from requests_<run>.jsonl)")
    p.add_argument("--meta", type=Path, help="meta.json with the engine settings (default: next to the file)")
    p.add_argument("--out", type=Path, help="output folder (default: outputs/replay/<run>)")
    p.add_argument("--no-plot", action="store_true", help="do not write cdf.png")
    p.add_argument("--max-concurrency", type=int, metavar="N",
                   help="the client kept at most N requests in flight (vllm bench serve --max-concurrency;"
                   " default: from the file or meta.json, else no limit)")
    e = p.add_argument_group("engine settings (override meta.json)")
    e.add_argument("--model", help="model option, e.g. llama3_8b")
    e.add_argument("--hardware", help="hardware option, e.g. h200")
    e.add_argument("--precision", help="precision option, e.g. bf16")
    e.add_argument("--tp", type=int, help="tensor-parallel size")
    e.add_argument("--max-num-seqs", type=int)
    e.add_argument("--max-num-batched-tokens", type=int)
    e.add_argument("--max-model-len", type=int)
    e.add_argument("--block-size", type=int)
    e.add_argument("--num-gpu-blocks", type=int, help="KV blocks vLLM reported (-> scheduler.num_gpu_blocks_override)")
    e.add_argument("--gpu-memory-utilization", type=float)
    e.add_argument("--kv-cache-dtype", help="vLLM's --kv-cache-dtype: auto, fp8, fp8_e4m3, fp8_e5m2, bfloat16")
    e.add_argument("--prefix-caching", action=argparse.BooleanOptionalAction, default=None,
                   dest="enable_prefix_caching", help="vLLM's enable_prefix_caching")
    e.add_argument("--async-scheduling", action=argparse.BooleanOptionalAction, default=None,
                   dest="async_scheduling", help="vLLM's async_scheduling")
    return p


SETTING_ARGS = (
    "model", "hardware", "precision", "tp", "max_num_seqs", "max_num_batched_tokens", "max_model_len",
    "block_size", "num_gpu_blocks", "gpu_memory_utilization", "enable_prefix_caching", "async_scheduling",
    "kv_cache_dtype",
)


def cli_settings(args: argparse.Namespace) -> EngineSettings:
    values = {k: getattr(args, k) for k in SETTING_ARGS}
    return EngineSettings(**values, sources={k: "command line" for k, v in values.items() if v is not None})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        print(f"error: {bad[0]!r} is neither an option nor a key=value override", file=sys.stderr)
        return 2
    try:
        source = locate(args.path, args.run, args.meta)
        out_dir = args.out or Path("outputs") / "replay" / source.run_name
        out_dir.mkdir(parents=True, exist_ok=True)
        result = replay(source, out_dir, file_format=args.format, cli_settings=cli_settings(args),
                        overrides=args.overrides, max_concurrency=args.max_concurrency)
    except SimError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(result))
    written = [write_comparison(result)]
    if not args.no_plot:
        png = write_cdf_plot(result)
        if png is None:
            print("cdf.png not written: matplotlib is not installed (pip install -e '.[plots]')")
        else:
            written.append(png)
    print(f"\nwritten: {', '.join(str(p) for p in written)}; simulator outputs in {result.simulated.sim_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
