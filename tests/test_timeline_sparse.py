"""The timeline grows with what happens, not with the simulated span: a run whose arrivals
are 10^7 s apart keeps (and writes) a handful of bins."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from sim.config.build import build_run_spec, resolved_config
from sim.metrics.timeline import ARRIVALS, Timeline
from sim.run import simulate
from conftest import compose_config


def test_bins_far_apart_are_stored_and_written_alone():
    timeline = Timeline(1.0)
    timeline.bin(0, 0.5)[ARRIVALS] += 1
    timeline.bin(1, 3e9)[ARRIVALS] += 1
    timeline.add_step(0, 1e9, 1e9 + 1.5, 1, 10, 0, 10, 1, 0, 1, 0.1)  # straddles two bins
    assert timeline.num_bins == 4
    rows = timeline.rows()
    assert [(r[0], r[1]) for r in rows] == [(0.0, 0), (1e9, 0), (1e9 + 1, 0), (3e9, 1)]
    assert sum(r[10] for r in rows) == pytest.approx(1.5)  # busy seconds, split across the edge


def test_a_run_at_a_rate_of_1e_minus_7_keeps_a_few_bins(tmp_path):
    cfg = compose_config([
        "output.print_summary=false", "output.progress=false", "workload.rate=1e-7",
        "workload.num_requests=3",
    ])
    result = simulate(build_run_spec(cfg), tmp_path, resolved_config(cfg))
    assert result.complete and result.summary["requests"]["finished"] == 3
    timeline = pq.read_table(tmp_path / "timeline.parquet").to_pydict()
    assert sum(timeline["arrivals"]) == 3 and sum(timeline["finished"]) == 3
    assert len(timeline["t_s"]) < 100  # the requests span ~3e7 s: dense bins would be 3e7 rows
    assert max(timeline["t_s"]) > 1e6
