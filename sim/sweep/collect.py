"""One Parquet table from a Hydra multirun folder: one row per job.

    python -m sim.sweep.collect multirun/2026-05-01_12-00-00/ -o sweep.parquet

Columns, in order:
- `job` (Hydra's job number) and `run_dir`;
- every override of the job (`.hydra/overrides.yaml`), named by its key (`hardware`,
  `scheduler.max_num_seqs`, `scenario` for `+scenario=...`) and typed as Hydra parses it; the
  keys whose values differ between jobs are listed in the table's metadata under `swept`;
- `complete`, `wall_time_s`, `engine_steps` from manifest.json;
- every value of summary.json, flattened with dots (`latency_s.ttft.p99`,
  `cost_energy.usd_per_million_output_tokens`, `utilization.mfu`).
Every job keeps its row, with `status`: "ok" (complete), "interrupted" (manifest marked
incomplete), or "failed" (no summary.json; `error` holds the message a refused job recorded in
its `failure.json`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

MANIFEST_KEYS = ("complete", "wall_time_s", "engine_steps")
SHOWN = (  # column, printed header, scale: the preview reads in ms and %, the file keeps SI
    ("throughput.output_tokens_per_s", "out tok/s", 1.0),
    ("latency_s.ttft.p99", "TTFT p99 ms", 1e3),
    ("latency_s.tpot.p99", "TPOT p99 ms", 1e3),
    ("goodput.fraction_of_finished", "goodput %", 1e2),
    ("utilization.mfu", "MFU %", 1e2),
    ("cost_energy.usd_per_million_output_tokens", "$/M out tok", 1.0),
)


FAILURE_FILE = "failure.json"  # what a job refused with a SimError leaves in its folder


def record_failure(job_dir: Path, message: str, exit_code: int) -> None:
    """Note in a sweep job's folder why it failed, so the sweep can go on to the next job and
    `collect` can list it."""
    job_dir.mkdir(parents=True, exist_ok=True)
    payload = {"status": "failed", "error": message, "exit_code": exit_code}
    (job_dir / FAILURE_FILE).write_text(json.dumps(payload, indent=2) + "\n")


def failed_jobs(sweep_dir: Path) -> list[tuple[Path, str]]:
    """(job folder, error message) of every job of the sweep that recorded a failure."""
    failures = []
    for job in job_dirs(sweep_dir):
        record = _read_json(job / FAILURE_FILE)
        if record is not None:
            failures.append((job, str(record.get("error", ""))))
    return failures


def job_status(job: Path, manifest: dict[str, Any] | None, summary: dict[str, Any] | None) -> str:
    if summary is None or (job / FAILURE_FILE).exists():
        return "failed"
    if manifest is not None and manifest.get("complete") is False:
        return "interrupted"
    return "ok"


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job folders of a multirun (those holding Hydra's `.hydra/overrides.yaml`)."""
    found = [p.parents[1] for p in sweep_dir.glob("**/.hydra/overrides.yaml")]
    return sorted(found, key=lambda p: (len(p.relative_to(sweep_dir).parts), _job_key(p.name)))


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists become JSON text."""
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(node, (list, tuple)):
        return {prefix: json.dumps(node)}
    return {prefix: node}


def job_overrides(job: Path) -> dict[str, Any]:
    """The job's overrides as {key: typed value}, parsed by Hydra's own override grammar."""
    lines = OmegaConf.to_container(OmegaConf.load(job / ".hydra" / "overrides.yaml"))
    parsed = OverridesParser.create().parse_overrides(list(lines or []))
    return {o.key_or_group: _plain(o.value()) for o in parsed}


def collect_rows(sweep_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per job and the override keys that vary across jobs."""
    rows = []
    override_keys: set[str] = set()
    for job in job_dirs(sweep_dir):
        row: dict[str, Any] = {"job": _job_key(job.name), "run_dir": str(job)}
        overrides = job_overrides(job)
        override_keys.update(overrides)
        row.update(overrides)
        manifest = _read_json(job / "manifest.json")
        summary = _read_json(job / "summary.json")
        row["status"] = job_status(job, manifest, summary)
        failure = _read_json(job / FAILURE_FILE)
        row["error"] = None if failure is None else str(failure.get("error", ""))
        for key in MANIFEST_KEYS:
            row[key] = (manifest or {}).get(key)
        for key, value in flatten(summary or {}).items():
            row[key if key not in row else f"summary.{key}"] = value
        rows.append(row)
    swept = [k for k in _ordered(rows, override_keys) if len({repr(r.get(k)) for r in rows}) > 1]
    return rows, swept


def to_table(rows: list[dict[str, Any]], swept: list[str]) -> pa.Table:
    columns = _ordered(rows, set().union(*rows) if rows else set())
    data = {name: _column([row.get(name) for row in rows]) for name in columns}
    table = pa.table(data) if data else pa.table({"job": pa.array([], pa.int64())})
    return table.replace_schema_metadata({"swept": json.dumps(swept)})


def collect(sweep_dir: Path, out: Path | None = None) -> pa.Table:
    """Read every job of `sweep_dir`, write the table to `out` (default: sweep_dir/sweep.parquet).
    A folder without jobs writes nothing (an empty table would pass for a result)."""
    rows, swept = collect_rows(sweep_dir)
    table = to_table(rows, swept)
    if rows:
        pq.write_table(table, out or sweep_dir / "sweep.parquet")
    return table


def _column(values: list[Any]) -> pa.Array:
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {int, float} and float in kinds:
        values = [None if v is None else float(v) for v in values]
    elif len(kinds) > 1:
        values = [None if v is None else str(v) for v in values]
    return pa.array(values)


def _ordered(rows: list[dict[str, Any]], names: set[str]) -> list[str]:
    """Names in first-seen order across rows."""
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key in names:
                seen.setdefault(key)
    return list(seen)


def _plain(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    return value


def _job_key(name: str) -> int | str:
    return int(name) if name.isdigit() else name


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _preview(table: pa.Table, swept: list[str]) -> str:
    shown = [(c, h, k) for c, h, k in SHOWN if c in table.column_names]
    cols = [(c, c, 1.0) for c in ("job", *swept, "status")] + shown
    data = table.select([c for c, _, _ in cols]).to_pylist()
    cells = [[_fmt(r[c], k) for c, _, k in cols] + [_flag(r)] for r in data]
    heads = [h for _, h, _ in cols] + ["flag"]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(heads)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(heads, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _flag(row: dict[str, Any]) -> str:
    """MISSES SLO / OVERLOADED, as the printed summary flags a run; `failed` for no summary."""
    if row.get("status") != "ok":
        return "failed"
    flags = []
    for key in ("ttft", "tpot", "e2e"):
        p99, limit = row.get(f"latency_s.{key}.p99"), row.get(f"goodput.slo.{key}_s")
        if p99 is not None and limit is not None and p99 > limit:
            flags.append("MISSES SLO")
            break
    failed = (row.get("requests.rejected") or 0) + (row.get("requests.unfinished") or 0)
    fraction = row.get("goodput.fraction_of_finished")
    if failed or (fraction is not None and fraction < 0.5):
        flags.append("OVERLOADED")
    return " + ".join(flags) or "ok"


def _fmt(v: Any, scale: float = 1.0) -> str:
    if isinstance(v, float):
        return f"{v * scale:,.4g}"
    return "-" if v is None else str(v)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.sweep.collect", description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder, e.g. multirun/<time>/")
    parser.add_argument("-o", "--out", type=Path, default=None, help="default: <sweep_dir>/sweep.parquet")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"error: no folder {args.sweep_dir}", file=sys.stderr)
        return 2
    table = collect(args.sweep_dir, args.out)
    if table.num_rows == 0:
        print(f"error: no Hydra jobs (*/.hydra/overrides.yaml) under {args.sweep_dir}; give the"
              " folder of a multirun (python -m sim -m ...), e.g. multirun/<time>/; nothing written",
              file=sys.stderr)
        return 2
    swept = json.loads(table.schema.metadata[b"swept"])
    print(_preview(table, swept))
    statuses = table.column("status").to_pylist()
    failed, interrupted = statuses.count("failed"), statuses.count("interrupted")
    for job, status, error in zip(table.column("job").to_pylist(), statuses, table.column("error").to_pylist()):
        if status != "ok":
            print(f"job {job}: {status}{f': {error}' if error else ''}")
    print(f"\n{table.num_rows} runs ({failed} failed, {interrupted} interrupted), {table.num_columns}"
          f" columns -> {args.out or args.sweep_dir / 'sweep.parquet'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
