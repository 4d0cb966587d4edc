"""One replay, end to end: find the run and its settings, simulate it, compare, write outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sim.errors import ConfigError, TraceError
from sim.replay.compare import Row, Side, compare
from sim.replay.measured import MeasuredRun
from sim.replay.readers import read_run, run_name_from_path
from sim.replay.settings import EngineSettings, Meta, read_meta, to_overrides
from sim.replay.simulate import Simulated, compose, measured_side, override_key, run_simulation

META_FILE = "meta.json"


@dataclass(frozen=True, slots=True)
class RunInput:
    path: Path  # the request file
    run_name: str
    meta: Meta | None


@dataclass(frozen=True, slots=True)
class ReplayResult:
    run: MeasuredRun
    settings: EngineSettings
    overrides: tuple[str, ...]  # as composed, engine settings then the user's
    user_overrides: tuple[str, ...]
    notes: tuple[str, ...]
    measured: Side
    simulated: Simulated
    rows: list[Row]
    out_dir: Path


def locate(path: Path, run: str | None = None, meta: Path | None = None) -> RunInput:
    """The request file and its meta.json. `path` is a file, or a folder holding
    `requests_<run>.jsonl[.gz]`; meta.json is `meta` or the one next to the file."""
    if path.is_dir():
        candidates = sorted(p for p in path.glob("requests_*.jsonl*") if p.name.endswith((".jsonl", ".jsonl.gz")))
        names = [p.name.split(".")[0].removeprefix("requests_") for p in candidates]
        if run is None:
            if len(candidates) != 1:
                raise TraceError(
                    f"{path}: a folder of {len(candidates)} runs; choose one with --run"
                    f" ({', '.join(names) or 'no requests_<run>.jsonl here'})"
                )
            run = names[0]
        if run not in names:
            _check_run_in_meta(meta or path / META_FILE, run)
            raise TraceError(f"{path}: no requests_{run}.jsonl here; runs found: {', '.join(names) or 'none'}")
        file = candidates[names.index(run)]
    elif path.is_file():
        file = path
        implied = run_name_from_path(file)
        if run is not None and file.name.startswith("requests_") and implied != run:
            raise TraceError(f"{file}: the file is run {implied!r}, not --run {run!r}; pass its folder with --run instead")
    else:
        raise TraceError(f"{path}: no such file or folder")
    meta_path = meta if meta is not None else file.parent / META_FILE
    if meta is not None and not meta.is_file():
        raise TraceError(f"{meta}: no such file (--meta)")
    parsed = read_meta(meta_path) if meta_path.is_file() else None
    name = run or run_name_from_path(file)
    if parsed is not None:
        _check_run_in_meta(parsed.path, name)
    return RunInput(file, name, parsed)


def _check_run_in_meta(meta_path: Path, run: str) -> None:
    meta = read_meta(meta_path) if meta_path.is_file() else None
    if meta is not None and meta.runs and run not in meta.runs:
        raise TraceError(f"{meta.path}: no run {run!r} in runs[] (runs: {', '.join(meta.runs)}); name it with --run")


def replay(
    source: RunInput,
    out_dir: Path,
    *,
    file_format: str = "auto",
    cli_settings: EngineSettings | None = None,
    overrides: Sequence[str] = (),
) -> ReplayResult:
    """Read the run, simulate it with its settings, and compare the two."""
    run = read_run(source.path, file_format, source.run_name)
    settings = source.meta.settings if source.meta is not None else EngineSettings()
    if cli_settings is not None:
        settings = settings.merged(cli_settings)
    for required, flag in (("model", "--model"), ("hardware", "--hardware")):
        if getattr(settings, required) is None:
            raise ConfigError(
                f"the run's {required} is not known: pass {flag} NAME (a `{required}` config option),"
                f" or keep a {META_FILE} with it next to the run file"
            )
    notes = list(run.notes)
    if source.meta is not None and source.run_name in source.meta.runs:
        expected = source.meta.runs[source.run_name].get("n")
        if isinstance(expected, int) and expected != run.num_requests:
            notes.append(f"{META_FILE} says run {source.run_name} had n={expected} requests; the file has {run.num_requests}")
    setting_overrides, unmapped = to_overrides(settings)
    notes += unmapped
    cfg = compose(setting_overrides, overrides)
    simulated = run_simulation(cfg, run, out_dir)
    if simulated.num_rejected or simulated.num_unfinished:
        notes.append(
            f"the simulator rejected {simulated.num_rejected} and left {simulated.num_unfinished} request(s)"
            " unfinished; the measured run served them all"
        )
    measured = measured_side(run)
    rows = compare(measured, simulated.side)
    user_keys = {override_key(o) for o in overrides}
    used = tuple(o for o in setting_overrides if override_key(o) not in user_keys)
    return ReplayResult(run, settings, used + tuple(overrides), tuple(overrides), tuple(notes), measured, simulated, rows, out_dir)
