"""Trace replay end to end: one output row per trace row, at the trace's own times.

The expected values are computed here from the trace files with the standard library only
(integer nanoseconds from the timestamp text, JSON milliseconds), independently of the
simulator's NumPy readers.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sim.config.build import build_run_spec, resolved_config
from sim.run import simulate
from sim.workload.registry import DATASETS, traces_dir
from conftest import compose_config

QUIET = ["output.print_summary=false", "output.progress=false"]
EPOCH = datetime(1970, 1, 1)  # the trace's timestamps are naive: no time zone, no DST


def run(tmp_path: Path, overrides: list[str]):
    cfg = compose_config(overrides + QUIET)
    result = simulate(build_run_spec(cfg), tmp_path, resolved_config(cfg))
    rows = sorted(pq.read_table(tmp_path / "requests.parquet").to_pylist(), key=lambda r: r["request_id"])
    return result, rows


def azure_rows() -> list[tuple[int, int, int]]:
    """(timestamp in integer ns, prompt, output) per row of the Azure conversation trace."""
    out = []
    with open(Path(traces_dir()) / DATASETS["azure_conv"].relpath, newline="") as f:
        for row in csv.DictReader(f):
            whole, _, fraction = row["TIMESTAMP"].partition(".")
            seconds = (datetime.fromisoformat(whole) - EPOCH) // timedelta(seconds=1)
            ns = seconds * 10**9 + int(fraction.ljust(9, "0"))
            out.append((ns, int(row["ContextTokens"]), int(row["GeneratedTokens"])))
    return out


def test_azure_window_replays_each_trace_row_once_at_its_shifted_scaled_time(tmp_path):
    start_s, end_s, speedup = 600.0, 780.0, 2.5
    trace = azure_rows()
    t0 = trace[0][0]
    window = [r for r in trace if start_s * 1e9 <= r[0] - t0 < end_s * 1e9]
    first = window[0][0]
    result, rows = run(tmp_path, [
        "workload=azure_conv", f"workload.start_s={start_s}", f"workload.end_s={end_s}",
        f"workload.speedup={speedup}",
    ])
    assert len(rows) == len(window) == result.summary["requests"]["arrived"] > 500
    assert [r["request_id"] for r in rows] == list(range(len(window)))
    for row, (ns, prompt, output) in zip(rows, window):
        assert row["arrival_s"] == pytest.approx((ns - first) / 1e9 / speedup, rel=0, abs=1e-9)
        assert (row["prompt_tokens"], row["output_tokens"]) == (prompt, output)
        assert row["status"] == "finished" and row["output_tokens_generated"] == output


def test_mooncake_replay_honours_num_requests_as_a_cap(tmp_path):
    n, speedup = 300, 4.0
    with open(Path(traces_dir()) / DATASETS["mooncake_conversation"].relpath) as f:
        trace = [json.loads(line) for _, line in zip(range(n), f)]
    result, rows = run(tmp_path, [
        "workload=mooncake_conversation", "workload.spread_ties_s=0", f"workload.speedup={speedup}",
        f"workload.num_requests={n}", "hardware=h200",
    ])
    assert len(rows) == n == result.summary["requests"]["arrived"]
    t0 = trace[0]["timestamp"]
    for row, line in zip(rows, trace):
        assert row["arrival_s"] == pytest.approx((line["timestamp"] - t0) / 1000 / speedup, rel=0, abs=1e-9)
        assert (row["prompt_tokens"], row["output_tokens"]) == (line["input_length"], line["output_length"])


def test_full_azure_trace_is_replayed_without_a_cap():
    cfg = compose_config(["+scenario=azure_conv_llama70b_h100"])
    assert cfg.workload.num_requests is None and cfg.workload.trace == "azure_conv"
    assert len(azure_rows()) == 19_366
