"""vLLM's per-step log and its runs' per-request token times, as measured for calibration.

The format (see `../shared/vllm/README.md` of the measurement set): a folder with `meta.json`
(`runs[]` with `run`, `t_start`, `wall` in Unix seconds; `gpu`, `model`, `precision`; the
engine settings), `steps_*.csv` from the engine-core process (one row per step: the batch the
scheduler chose and the Unix times `t_sched_start`, `t_sched_end`, `t_update`), and
`requests_<run>.jsonl` (per request `send`, `prompt`, `output`, `tok`: every token's arrival at
the client, seconds from the run's start).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.errors import TraceError

STEP_COLUMNS = (
    "t_sched_start", "t_sched_end", "t_update", "num_decode", "decode_ctx_sum", "num_prefill",
    "prefill_tokens", "prefill_ctx_sum", "prefill_pairs",
)  # fmt: skip


@dataclass(frozen=True)
class StepLog:
    """Columns of the step log as float arrays (times in Unix seconds), plus the chunks
    (`computed:new` per prefill request, `|`-separated) and the run each step belongs to."""

    columns: dict[str, np.ndarray]
    chunks: list[str]
    run: np.ndarray  # run name per step ("" outside every run)

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]


@dataclass(frozen=True)
class RunRequests:
    name: str
    t_start: float  # Unix seconds
    send: np.ndarray  # s from the run's start
    prompt: np.ndarray
    first_token: np.ndarray  # s from the run's start


def read_meta(folder: Path) -> dict:
    path = folder / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TraceError(f"{path}: cannot read the run metadata ({err})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("runs"), list):
        raise TraceError(f"{path}: expected an object with a 'runs' list")
    return meta


def read_step_log(folder: Path, meta: dict) -> StepLog | None:
    """The folder's step log, or None when it has none."""
    paths = sorted(folder.glob("steps_*.csv"))
    if not paths:
        return None
    rows: list[dict[str, str]] = []
    for path in paths:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = set(STEP_COLUMNS) - set(reader.fieldnames or ())
            if missing:
                raise TraceError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
            rows.extend(reader)
    try:
        columns = {k: np.array([float(r[k]) for r in rows]) for k in STEP_COLUMNS}
    except ValueError as err:
        raise TraceError(f"{folder}: a step-log value is not a number ({err})") from None
    order = np.argsort(columns["t_sched_start"], kind="stable")
    columns = {k: v[order] for k, v in columns.items()}
    chunks = [rows[i].get("chunks", "") or "" for i in order]
    run = np.full(len(rows), "", dtype=object)
    for entry in meta["runs"]:
        inside = (columns["t_sched_start"] >= entry["t_start"]) & (
            columns["t_sched_start"] <= entry["t_start"] + entry["wall"]
        )
        run[inside] = entry["run"]
    return StepLog(columns, chunks, run)


def read_run_requests(folder: Path, meta: dict) -> list[RunRequests]:
    runs = []
    for entry in meta["runs"]:
        path = folder / f"requests_{entry['run']}.jsonl"
        if not path.is_file():
            continue
        send, prompt, first = [], [], []
        with path.open() as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    send.append(float(row["send"]))
                    prompt.append(int(row["prompt"]))
                    first.append(float(row["tok"][0]) if row["tok"] else np.nan)
                except (ValueError, KeyError, TypeError, IndexError):
                    raise TraceError(f"{path}:{line_no}: expected send, prompt and tok") from None
        runs.append(RunRequests(entry["run"], float(entry["t_start"]), np.array(send),
                                np.array(prompt), np.array(first)))  # fmt: skip
    return runs
