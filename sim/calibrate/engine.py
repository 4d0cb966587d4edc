"""`python -m sim.calibrate engine`: fit the engine-time profile of a GPU to real vLLM runs.

    python -m sim.calibrate engine DIR [DIR ...] --hardware h200 [--out PATH]
    python -m sim.calibrate engine --replay RUN [RUN ...] --hardware h200 [--run NAME]
        [--model NAME] [--set key=value ...] [--out PATH]

No GPU needed. DIR: a folder of a vLLM step log and its runs (sim.calibrate.step_log); the
model, precision and engine settings come from its meta.json; every coefficient is fitted
(sim.calibrate.engine_fit). With `--replay`, RUN is any run `python -m sim.replay` reads and
only what the client measured is used (sim.calibrate.engine_replay). Writes
`sim/data/profiles/engine/<hardware>.json` (or PATH) and prints the fit report; a run uses a
profile elsewhere with `cost.engine_profile=PATH`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from sim.calibrate.engine_fit import fit_engine, kernel_times
from sim.calibrate.step_log import StepLog, read_meta, read_run_requests, read_step_log
from sim.cost.engine_costs import max_cudagraph_capture_size
from sim.cost.engine_profiles import engine_profile_path
from sim.errors import SimError, TraceError


def _cost_model(hardware: str, meta: dict):
    from sim.config.build import build_run_spec
    from sim.cost.roofline import build_cost_model
    from sim.sweep.probe import compose_config

    overrides = [f"model={meta.get('model', 'llama3_8b')}", f"hardware={hardware}",
                 f"precision={meta.get('precision', 'bf16')}"]  # fmt: skip
    spec = build_run_spec(compose_config(overrides))
    return build_cost_model(spec.model, spec.hardware, spec.precision, spec.tp, spec.cost)


def _merge(logs: list[StepLog]) -> StepLog:
    columns = {k: np.concatenate([log.columns[k] for log in logs]) for k in logs[0].columns}
    chunks = [c for log in logs for c in log.chunks]
    run = np.concatenate([log.run for log in logs])
    return StepLog(columns, chunks, run)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim.calibrate engine", description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="+", type=Path, help="folders with meta.json, steps_*.csv, requests_*.jsonl")
    p.add_argument("--hardware", required=True, help="catalog name of the GPU the runs used, e.g. h200")
    p.add_argument("--out", type=Path, help="profile path (default sim/data/profiles/engine/<hardware>.json)")
    p.add_argument("--replay", action="store_true", help="fit to replayed client measurements (no step log)")
    p.add_argument("--run", help="with --replay: the run to take from a folder of several")
    p.add_argument("--model", help="with --replay: the model config option, when no meta.json says it")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="with --replay: a config override for every replay (repeatable)")
    p.add_argument("--max-evaluations", type=int, default=40, help="with --replay: replays of the run set")
    p.add_argument("--max-concurrency", type=int, metavar="N",
                   help="with --replay: the runs' client kept at most N requests in flight (as python -m sim.replay)")
    args = p.parse_args(argv)
    if args.replay:
        return _replay_main(args)
    try:
        logs, runs, metas = [], [], []
        for folder in args.dirs:
            if not folder.is_dir():
                raise TraceError(f"{folder}: not a folder")
            meta = read_meta(folder)
            log = read_step_log(folder, meta)
            if log is None:
                raise TraceError(f"{folder}: no steps_*.csv step log to fit")
            logs.append(log)
            runs.extend(read_run_requests(folder, meta))
            metas.append(meta)
        meta = metas[0]
        sched = meta.get("scheduler", {})
        capture = max_cudagraph_capture_size(int(sched.get("max_num_seqs", 1024)),
                                             int(sched.get("max_num_batched_tokens", 8192)))  # fmt: skip
        log = _merge(logs)
        cost_model = _cost_model(args.hardware, meta)
        kernels = kernel_times(log, cost_model)
        source = (
            f"fitted by sim.calibrate.engine_fit to vLLM {meta.get('vllm', '?')} on"
            f" {meta.get('gpu', args.hardware)} ({len(log)} logged steps, {meta.get('model', '?')}"
            f" {meta.get('precision', '?')}; {', '.join(str(f) for f in args.dirs)})"
        )
        fitted = fit_engine(log, runs, kernels, capture, source, cost_model.model.num_hidden_layers)
    except SimError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.out or engine_profile_path(args.hardware)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"hardware": args.hardware, "vllm": meta.get("vllm"), "engine": fitted.costs.to_dict()}
    out.write_text(json.dumps(payload, indent=2) + "\n")
    for key, value in fitted.costs.to_dict().items():
        if key.endswith("_s"):
            print(f"{key:26s} {value * 1e3:10.4f} ms")
        elif key in ("launch_log_sigma", "fitted_num_layers"):
            print(f"{key:26s} {value:10.4g}")
    for key, line in fitted.report.items():
        print(f"{key}: {line}")
    print(f"wrote {out}")
    return 0


def _replay_main(args: argparse.Namespace) -> int:
    from sim.calibrate.engine_replay import fit_from_replays
    from sim.cost.engine_profiles import load_engine_costs
    from sim.replay.replay import locate, replay
    from sim.replay.settings import EngineSettings

    if args.max_evaluations < 1:
        print("error: --max-evaluations must be at least 1", file=sys.stderr)
        return 2
    try:
        sources = [locate(path, args.run) for path in args.dirs]
        settings = EngineSettings(model=args.model, hardware=args.hardware)
        base = load_engine_costs(_hardware_spec(args.hardware), 2e-3)

        def replay_fn(source, profile: Path, out_dir: Path):
            overrides = [*args.set, f"cost.engine_profile={profile}"]
            return replay(source, out_dir, cli_settings=settings, overrides=overrides,
                          max_concurrency=args.max_concurrency).rows

        fitted = fit_from_replays(sources, base, replay_fn, args.max_evaluations)
    except SimError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.out or engine_profile_path(args.hardware)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"hardware": args.hardware, "engine": fitted.costs.to_dict()}, indent=2) + "\n")
    print(f"{fitted.evaluations} replays of {len(sources)} run(s): {fitted.costs.fit_error}")
    print(f"wrote {out}")
    return 0


def _hardware_spec(name: str):
    from sim.config.build import build_run_spec
    from sim.sweep.probe import compose_config

    return build_run_spec(compose_config([f"hardware={name}"])).hardware


if __name__ == "__main__":
    sys.exit(main())
