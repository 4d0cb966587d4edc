"""A signal is honoured inside a long event: 300,000 offline requests arrive in one SimPy
event, and a SIGTERM during it stops the run within the event, with every request made so
far accounted for and the outputs readable."""

from __future__ import annotations

import signal
import time

import pyarrow.parquet as pq

from sim.config.build import build_run_spec, resolved_config
from sim.run import simulate
from sim.simulation import RequestFactory
from conftest import compose_config


def test_sigterm_during_a_burst_of_simultaneous_arrivals_stops_within_it(tmp_path, monkeypatch):
    made = []
    make = RequestFactory.__call__

    def counted(self, spec):
        made.append(1)
        if len(made) == 1000:
            signal.raise_signal(signal.SIGTERM)
        return make(self, spec)

    monkeypatch.setattr(RequestFactory, "__call__", counted)
    cfg = compose_config([
        "output.print_summary=false", "output.progress=false", "workload=offline",
        "workload.num_requests=300000",
    ])
    spec = build_run_spec(cfg)
    start = time.perf_counter()
    result = simulate(spec, tmp_path, resolved_config(cfg))
    assert not result.complete and result.interrupted_by == "SIGTERM"
    assert len(made) == 1000 == result.summary["requests"]["arrived"]  # none made after it
    counts = result.summary["requests"]
    assert counts["finished"] + counts["rejected"] + counts["unfinished"] == counts["arrived"]
    assert pq.read_table(tmp_path / "requests.parquet").num_rows == 1000
    assert time.perf_counter() - start < 30
