"""Read a real run: the per-request JSONL of the measurement set, `vllm bench serve` JSON, or CSV.

Every reader returns a `MeasuredRun` (requests sorted by send time) or raises `TraceError`
naming the file, the line where there is one, and what would fix it.

Formats:
  jsonl       one object per line: `send` (s), `prompt`, `output` (tokens), `tok` (every output
              token's arrival at the client, s, same clock as `send`); `.jsonl.gz` too.
  vllm-bench  `vllm bench serve --save-result --save-detailed` JSON: per-request lists
              `input_lens`, `output_lens`, `ttfts`, `itls`, `latencies`, `start_times`,
              `errors`. vllm/benchmarks/serve.py (vLLM 0.24.0; read at vllm-project/vllm
              commit 009e6d4a): `benchmark()` builds them from each `RequestFuncOutput`,
              `main_async()` drops them unless --save-detailed, a failed request has an
              `errors` entry and output length 0, and TPOT is (latency - ttft) /
              (output_len - 1). `start_time` is `time.perf_counter()` when the request is
              sent (vllm/benchmarks/lib/endpoint_request_func.py), so only differences count.
  csv         a header and one row per request; see CSV_COLUMNS for the accepted names.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np

from sim.errors import TraceError
from sim.replay.client_limit import is_limit
from sim.replay.measured import MeasuredRun, RunBuilder

FORMATS = ("auto", "jsonl", "vllm-bench", "csv")
JSONL_FIELDS = ("send", "prompt", "output", "tok")
BENCH_FIELDS = ("input_lens", "output_lens", "ttfts", "itls", "latencies", "start_times")
# Accepted CSV header names, first match wins. Times in seconds unless the name ends in _ms.
CSV_COLUMNS: dict[str, tuple[str, ...]] = {
    "arrival": ("arrival_s", "arrival", "send", "send_s", "start_time", "timestamp"),
    "prompt": ("prompt_tokens", "prompt", "input_tokens", "input_len", "num_prefill_tokens"),
    "output": ("output_tokens", "output", "output_len", "num_decode_tokens"),
    "ttft": ("ttft_s", "ttft", "ttft_ms"),
    "e2e": ("e2e_s", "e2e", "latency", "latency_s", "e2e_ms", "latency_ms"),
    "tokens": ("token_times_s", "token_times", "tok"),
}


def detect_format(path: Path) -> str:
    """The format implied by the file name; `.json` is taken as `vllm bench serve` output."""
    name = path.name.lower().removesuffix(".gz")
    for suffix, fmt in ((".jsonl", "jsonl"), (".json", "vllm-bench"), (".csv", "csv")):
        if name.endswith(suffix):
            return fmt
    raise TraceError(
        f"{path}: cannot tell the format from the file name; name it .jsonl, .json or .csv, "
        "or pass --format jsonl | vllm-bench | csv"
    )


def read_run(path: Path, file_format: str = "auto", name: str | None = None) -> MeasuredRun:
    """Parse `path` as `file_format` (auto: from the extension)."""
    if not path.is_file():
        raise TraceError(f"{path}: no such file")
    if file_format not in FORMATS:
        raise TraceError(f"--format {file_format!r} is unknown; use one of {', '.join(FORMATS)}")
    fmt = detect_format(path) if file_format == "auto" else file_format
    run_name = name or run_name_from_path(path)
    reader = {"jsonl": read_jsonl, "vllm-bench": read_vllm_bench, "csv": read_csv}[fmt]
    return reader(path, run_name)


def run_name_from_path(path: Path) -> str:
    """`requests_pois_6.jsonl` -> `pois_6`; otherwise the file name without its extensions."""
    stem = path.name.split(".")[0]
    return stem.removeprefix("requests_") or stem


def _open_text(path: Path) -> IO[str]:
    try:
        if path.name.endswith(".gz"):
            return gzip.open(path, "rt", encoding="utf-8", newline="")
        return path.open("r", encoding="utf-8", newline="")
    except OSError as exc:
        raise TraceError(f"{path}: cannot open ({exc.strerror})") from None


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with _open_text(path) as f:
        try:
            yield from enumerate(f, start=1)
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise TraceError(f"{path}: cannot read the file ({exc})") from None


def _number(value: Any, where: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TraceError(f"{where}: {what} must be a finite number, got {value!r}")
    return float(value)


def _count(value: Any, where: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
        raise TraceError(f"{where}: {what} must be a positive whole number of tokens, got {value!r}")
    return int(value)


def _token_times(value: Any, send: float, where: str) -> np.ndarray:
    if not isinstance(value, list) or not value:
        raise TraceError(f"{where}: tok must be a non-empty list of token arrival times (s)")
    tok = np.array([_number(t, where, "every tok entry") for t in value], dtype=np.float64)
    if tok[0] < send or np.any(np.diff(tok) < 0):
        raise TraceError(f"{where}: tok must be non-decreasing times no earlier than send ({send})")
    return tok


def read_jsonl(path: Path, name: str) -> MeasuredRun:
    """The measurement set's per-request JSONL (README of the set: TTFT = tok[0] - send, ...)."""
    run = RunBuilder(name, str(path), "jsonl")
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TraceError(f"{where}: not valid JSON ({exc.msg}); each line must be one JSON object") from None
        if not isinstance(row, dict):
            raise TraceError(f"{where}: each line must be a JSON object with {', '.join(JSONL_FIELDS)}")
        missing = [k for k in JSONL_FIELDS if k not in row]
        if missing:
            raise TraceError(f"{where}: missing field(s) {', '.join(missing)}; each line needs {', '.join(JSONL_FIELDS)}")
        send = _number(row["send"], where, "send")
        tok = _token_times(row["tok"], send, where)
        run.add_token_times(send, _count(row["prompt"], where, "prompt"), _count(row["output"], where, "output"), tok)
    return run.build()


def read_vllm_bench(path: Path, name: str) -> MeasuredRun:
    """`vllm bench serve --save-result --save-detailed` JSON. Failed requests are left out:
    they generated nothing, so their output length cannot be replayed."""
    try:
        with _open_text(path) as f:
            doc = json.load(f)
    except json.JSONDecodeError as exc:
        raise TraceError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}: cannot read the file ({exc})") from None
    if not isinstance(doc, dict):
        raise TraceError(f"{path}: expected the JSON object that vllm bench serve --save-result writes")
    missing = [k for k in BENCH_FIELDS if not isinstance(doc.get(k), list)]
    if missing:
        raise TraceError(
            f"{path}: no per-request list(s) {', '.join(missing)}; re-run vllm bench serve with "
            "--save-result --save-detailed"
        )
    n = len(doc["start_times"])
    if any(len(doc[k]) != n for k in BENCH_FIELDS):
        lengths = ", ".join(f"{k}={len(doc[k])}" for k in BENCH_FIELDS)
        raise TraceError(f"{path}: the per-request lists differ in length ({lengths})")
    errors = doc.get("errors") if isinstance(doc.get("errors"), list) else [""] * n
    run = RunBuilder(name, str(path), "vllm-bench")
    run.max_concurrency, run.infinite_rate = _client_limits(doc, path)
    failed = 0
    for i in range(n):
        where = f"{path}: request {i}"
        if (i < len(errors) and errors[i]) or not doc["output_lens"][i]:
            failed += 1
            continue
        send = _number(doc["start_times"][i], where, "start_times")
        output = _count(doc["output_lens"][i], where, "output_lens")
        ttft = _number(doc["ttfts"][i], where, "ttfts")
        latency = _number(doc["latencies"][i], where, "latencies")
        itl = doc["itls"][i]
        if not isinstance(itl, list):
            raise TraceError(f"{where}: itls must be a list of gaps (s)")
        # vLLM's own TPOT: (latency - ttft) / (output_len - 1), vllm/benchmarks/serve.py.
        tpot = (latency - ttft) / (output - 1) if output > 1 else float("nan")
        gaps = np.array([_number(g, where, "every itls entry") for g in itl], dtype=np.float64)
        run.add(send, _count(doc["input_lens"][i], where, "input_lens"), output,
                ttft_s=ttft, e2e_s=latency, tpot_s=tpot, itl_s=gaps)
    if failed:
        run.notes.append(f"{failed} failed request(s) in the benchmark left out")
    return _rebased(run.build())


def _client_limits(doc: dict[str, Any], path: Path) -> tuple[int | None, bool]:
    """`max_concurrency` (null: none) and whether `request_rate` was "inf", as
    vllm/benchmarks/serve.py writes them into the result."""
    limit = doc.get("max_concurrency")
    if limit is not None and not is_limit(limit):
        raise TraceError(f"{path}: max_concurrency must be null or a whole number >= 1 (got {limit!r})")
    rate = doc.get("request_rate")
    return limit, rate == "inf" or (isinstance(rate, (int, float)) and math.isinf(rate))


def _rebased(run: MeasuredRun) -> MeasuredRun:
    """Send times relative to the first send: `start_times` are perf_counter readings."""
    return replace(run, send_s=run.send_s - run.send_s.min())


def _column(header: list[str], key: str) -> str | None:
    lowered = {h.strip().lower(): h for h in header}
    return next((lowered[c] for c in CSV_COLUMNS[key] if c in lowered), None)


def read_csv(path: Path, name: str) -> MeasuredRun:
    """A CSV with arrival, prompt and output columns and, optionally, measured TTFT, E2E and
    token times (`token_times_s`: every token's arrival, space- or `;`-separated, same clock
    as the arrival). Without token times, TPOT is (E2E - TTFT) / (output - 1) and ITL is not
    measured."""
    with _open_text(path) as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise TraceError(f"{path}: empty file; expected a header row") from None
        except (csv.Error, UnicodeDecodeError, OSError, EOFError) as exc:
            raise TraceError(f"{path}:1: cannot parse the header ({exc})") from None
        cols = {key: _column(header, key) for key in CSV_COLUMNS}
        missing = [key for key in ("arrival", "prompt", "output") if cols[key] is None]
        if missing:
            wanted = "; ".join(f"{k}: one of {', '.join(CSV_COLUMNS[k])}" for k in missing)
            raise TraceError(f"{path}:1: missing column(s) ({wanted}); columns found: {', '.join(header)}")
        index = {key: header.index(col) for key, col in cols.items() if col is not None}
        run = RunBuilder(name, str(path), "csv")
        try:
            for lineno, values in enumerate(reader, start=2):
                if not values or not any(v.strip() for v in values):
                    continue
                _csv_row(run, values, index, cols, f"{path}:{lineno}")
        except (csv.Error, UnicodeDecodeError, OSError, EOFError) as exc:
            raise TraceError(f"{path}: cannot parse the CSV ({exc})") from None
    return run.build()


def _csv_row(run: RunBuilder, values: list[str], index: dict[str, int], cols: dict, where: str) -> None:
    if len(values) < len(index) or any(i >= len(values) for i in index.values()):
        raise TraceError(f"{where}: the row has {len(values)} fields, fewer than the header")

    def number(key: str) -> float:
        text = values[index[key]].strip()
        if key in ("ttft", "e2e") and text == "":
            return float("nan")
        try:
            value = float(text)
        except ValueError:
            raise TraceError(f"{where}: {cols[key]}={text!r} is not a number") from None
        if not math.isfinite(value):
            raise TraceError(f"{where}: {cols[key]}={text!r} is not a finite number")
        return value / 1000.0 if cols[key].lower().endswith("_ms") else value

    send = number("arrival")
    prompt = _count(number("prompt"), where, cols["prompt"])
    output = _count(number("output"), where, cols["output"])
    if "tokens" in index and values[index["tokens"]].strip():
        parts = values[index["tokens"]].replace(";", " ").split()
        try:
            tok = [float(p) for p in parts]
        except ValueError:
            raise TraceError(f"{where}: {cols['tokens']} must hold numbers separated by spaces or ';'") from None
        run.add_token_times(send, prompt, output, _token_times(tok, send, where))
        return
    ttft = number("ttft") if "ttft" in index else float("nan")
    e2e = number("e2e") if "e2e" in index else float("nan")
    tpot = (e2e - ttft) / (output - 1) if output > 1 else float("nan")
    run.add(send, prompt, output, ttft_s=ttft, e2e_s=e2e, tpot_s=tpot)
