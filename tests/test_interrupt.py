"""Runs that end before their workload does: the horizon, and SIGINT / SIGTERM.

Either way the Parquet files hold what was simulated and are readable (written under a
temporary name, renamed when closed), requests still queued or running are `unfinished`, and
an interrupted run's manifest says `"complete": false` and which signal stopped it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sim.config.build import build_run_spec, resolved_config
from sim.run import simulate
from conftest import REPO_ROOT, compose_config

QUIET = ["output.print_summary=false", "output.progress=false"]


def test_horizon_stops_an_overloaded_run_and_counts_the_unfinished(tmp_path):
    # Ten times what one H100 serves (about 16 req/s of this chat traffic), for 20 simulated s.
    cfg = compose_config([*QUIET, "workload.rate=160", "workload.num_requests=100000", "horizon_s=20"])
    result = simulate(build_run_spec(cfg), tmp_path, resolved_config(cfg))
    counts = result.summary["requests"]
    assert result.complete and result.manifest["horizon_s"] == 20
    assert counts["unfinished"] > 1000 and counts["finished"] > 100
    assert counts["finished"] + counts["rejected"] + counts["unfinished"] == counts["arrived"]
    assert 2800 < counts["arrived"] < 3600  # 160 req/s x 20 s: only what arrived before the horizon
    rows = pq.read_table(tmp_path / "requests.parquet", columns=["status", "arrival_s", "finish_s"])
    assert rows.num_rows == counts["arrived"]
    assert max(rows.column("arrival_s").to_pylist()) < 20
    steps = pq.read_table(tmp_path / "steps.parquet", columns=["start_s", "duration_s"]).to_pydict()
    assert max(s + d for s, d in zip(steps["start_s"], steps["duration_s"])) <= 20


def test_queue_limit_rejects_arrivals_when_the_waiting_queue_is_full(tmp_path):
    cfg = compose_config([
        *QUIET, "workload.rate=160", "workload.num_requests=2000", "horizon_s=10",
        "scheduler.max_waiting_requests=32",
    ])
    result = simulate(build_run_spec(cfg), tmp_path, resolved_config(cfg))
    counts = result.summary["requests"]
    rows = pq.read_table(tmp_path / "requests.parquet").to_pylist()
    full = [r for r in rows if r["status"] == "rejected"]
    assert counts["rejected"] == len(full) > 100
    assert all(r["reject_reason"].startswith("queue full") for r in full)
    max_num_seqs = result.summary["setup"]["max_num_seqs"]
    assert counts["unfinished"] <= 32 + max_num_seqs  # the waiting queue plus those running
    steps = pq.read_table(tmp_path / "steps.parquet", columns=["num_waiting"])
    assert max(steps.column("num_waiting").to_pylist()) <= 32


def test_a_signal_stops_the_run_between_events_with_every_request_accounted_for(tmp_path, monkeypatch):
    from sim.progress import Progress

    original = Progress.tick
    steps = []

    def tick(self, sim_time_s, num_finished):  # called after every engine step
        steps.append(sim_time_s)
        if len(steps) == 300:
            signal.raise_signal(signal.SIGINT)  # as Ctrl-C would, in the middle of the run
        original(self, sim_time_s, num_finished)

    monkeypatch.setattr(Progress, "tick", tick)
    handler = signal.getsignal(signal.SIGINT)
    cfg = compose_config([*QUIET, "workload.rate=50", "workload.num_requests=5000"])
    result = simulate(build_run_spec(cfg), tmp_path, resolved_config(cfg))
    assert not result.complete and result.interrupted_by == "SIGINT"
    assert result.manifest["engine_steps"] == len(steps) == 300  # stopped right after the signal
    counts = result.summary["requests"]
    assert counts["finished"] + counts["rejected"] + counts["unfinished"] == counts["arrived"]
    assert counts["unfinished"] > 0 and counts["finished"] > 0
    assert pq.read_table(tmp_path / "requests.parquet").num_rows == counts["arrived"]
    assert signal.getsignal(signal.SIGINT) is handler  # restored once the outputs are written


def _start_long_run(run_dir: Path) -> subprocess.Popen:
    """`python -m sim` on a run that takes minutes; returns once the simulation is going."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim", *QUIET, "workload.rate=50", "workload.num_requests=1000000",
         f"hydra.run.dir={run_dir}"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while not list(run_dir.glob(".requests.parquet.*.tmp")):  # the recorder opened its files
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.05)
    time.sleep(2.0)
    return proc


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_leaves_readable_partial_outputs_and_an_incomplete_manifest(tmp_path, signum, code):
    proc = _start_long_run(tmp_path)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["complete"] is False
    assert manifest["interrupted_by"] == signal.Signals(signum).name
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["complete"] is False
    requests = pq.read_table(tmp_path / "requests.parquet")
    steps = pq.read_table(tmp_path / "steps.parquet")
    assert requests.num_rows == summary["requests"]["arrived"] > 0
    assert steps.num_rows == manifest["engine_steps"] > 0
    assert set(requests.column("status").to_pylist()) <= {"finished", "rejected", "unfinished"}
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp")), os.listdir(tmp_path)
