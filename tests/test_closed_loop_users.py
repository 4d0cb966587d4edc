"""Closed-loop users are started only as far as the request budget lets them send: 10^5 users
for 10 requests start 10 processes (10^8 would otherwise take minutes and tens of GB), and
the run is the one all the users would give."""

from __future__ import annotations

import time

import pyarrow.parquet as pq

from sim.clients import Clients
from sim.config.build import build_run_spec, resolved_config
from sim.run import simulate
from conftest import compose_config

BASE = ["output.print_summary=false", "output.progress=false", "workload=closed_loop_chat",
        "workload.num_requests=10", "workload.duration_s=null"]


def _run(tmp_path, concurrency):
    cfg = compose_config([*BASE, f"workload.concurrency={concurrency}"])
    start = time.perf_counter()
    result = simulate(build_run_spec(cfg), tmp_path, resolved_config(cfg))
    return result, time.perf_counter() - start


def test_many_users_for_ten_requests_start_ten(tmp_path, monkeypatch):
    started = []
    user = Clients.user

    def counted(self):
        started.append(1)
        return user(self)

    monkeypatch.setattr(Clients, "user", counted)
    result, _ = _run(tmp_path / "many", 10**5)
    assert result.summary["requests"]["finished"] == 10 and len(started) == 10
    _run(tmp_path / "few", 10)
    many = pq.read_table(tmp_path / "many" / "requests.parquet")
    assert many.equals(pq.read_table(tmp_path / "few" / "requests.parquet"))
