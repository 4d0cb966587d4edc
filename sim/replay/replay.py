"""One replay, end to end: find the run and its settings, simulate it, compare, write outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sim.errors import ConfigError, TraceError
from sim.replay.client_limit import ClientLimit, client_limit, is_limit, limit_hint
from sim.replay.compare import MIN_REQUESTS_FOR_TAILS, SMALL_RUN_SEEDS, Row, Side, compare
from sim.replay.measured import MeasuredRun
from sim.replay.readers import read_run, run_name_from_path
from sim.replay.settings import EngineSettings, Meta, drop_stale_block_count, read_meta, to_overrides
from sim.replay.stalls import OutputStalls, find_output_stalls
from sim.replay.simulate import SEEDS_DIR, SIM_DIR, Simulated, compose, measured_side, override_key, run_simulation

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
    client: ClientLimit | None  # the measured client's concurrency limit, when it had one
    stalls: OutputStalls | None  # pauses after the engine in the measured run (not modelled)
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
    max_concurrency: int | None = None,
) -> ReplayResult:
    """Read the run, simulate it with its settings, and compare the two. `max_concurrency`:
    the client's limit on requests in flight (`vllm bench serve --max-concurrency`), when the
    file and meta.json do not say it."""
    run = read_run(source.path, file_format, source.run_name)
    client = _client(run, source, max_concurrency)
    measured_settings = source.meta.settings if source.meta is not None else EngineSettings()
    settings = measured_settings if cli_settings is None else measured_settings.merged(cli_settings)
    settings, stale_blocks = drop_stale_block_count(measured_settings, settings, map(override_key, overrides))
    for required, flag in (("model", "--model"), ("hardware", "--hardware")):
        if getattr(settings, required) is None:
            raise ConfigError(
                f"the run's {required} is not known: pass {flag} NAME (a `{required}` config option),"
                f" or keep a {META_FILE} with it next to the run file"
            )
    notes = list(run.notes)
    if stale_blocks is not None:
        notes.append(stale_blocks)
    stalls = find_output_stalls(run)
    if stalls is not None:
        notes.append(stalls.note)
    if client is None:
        hint = limit_hint(run)
        if hint is not None:
            notes.append(hint)
    if source.meta is not None and source.run_name in source.meta.runs:
        expected = source.meta.runs[source.run_name].get("n")
        if isinstance(expected, int) and expected != run.num_requests:
            notes.append(f"{META_FILE} says run {source.run_name} had n={expected} requests; the file has {run.num_requests}")
    setting_overrides, unmapped = to_overrides(settings)
    notes += unmapped
    cfg = compose(setting_overrides, overrides)
    user_keys = {override_key(o) for o in overrides}
    small = run.num_requests < MIN_REQUESTS_FOR_TAILS and "seed" not in user_keys
    base_seed = int(cfg.seed)
    runs = run_simulation(cfg, run, out_dir, client, SMALL_RUN_SEEDS if small else 1)
    simulated, sides = runs[0], [r.side for r in runs]
    if small:
        notes.append(
            f"fewer than {MIN_REQUESTS_FOR_TAILS} requests: simulated with seeds {base_seed}-{base_seed + len(runs) - 1};"
            f" each figure is their median, [lowest, highest] beside it (seed {base_seed}'s outputs in"
            f" {SIM_DIR}/, the others in {SEEDS_DIR}/)"
        )
    if simulated.num_rejected or simulated.num_unfinished:
        notes.append(
            f"the simulator rejected {simulated.num_rejected} and left {simulated.num_unfinished} request(s)"
            " unfinished; the measured run served them all"
        )
    measured = measured_side(run)
    rows = compare(measured, sides)
    used = tuple(o for o in setting_overrides if override_key(o) not in user_keys)
    return ReplayResult(run, settings, used + tuple(overrides), tuple(overrides), tuple(notes), client, stalls,
                        measured, simulated, rows, out_dir)  # fmt: skip


def _client(run: MeasuredRun, source: RunInput, max_concurrency: int | None) -> ClientLimit | None:
    """The client's limit: the command line, else the run file, else meta.json's runs[] entry."""
    if max_concurrency is not None:
        limit, where = max_concurrency, "command line"
    elif run.max_concurrency is not None:
        limit, where = run.max_concurrency, f"{run.file_format} file"
    else:
        entry = source.meta.runs.get(source.run_name, {}) if source.meta is not None else {}
        limit, where = entry.get("max_concurrency"), META_FILE
        if limit is None:
            return None
        if not is_limit(limit):
            raise TraceError(f"{source.meta.path}: runs[{source.run_name}].max_concurrency must be a whole number >= 1 (got {limit!r})")
    if limit < 1:
        raise ConfigError(f"--max-concurrency must be at least 1 request (got {limit})")
    return client_limit(run, limit, where)
