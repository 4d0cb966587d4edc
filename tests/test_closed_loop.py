"""Closed-loop users and multi-turn sessions: who sends what, when, and the bounds that stop them."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from sim.clients import MAX_INSTANT_REFUSALS
from sim.config.build import build_run_spec, resolved_config
from sim.config.workload_schema import workload_spec
from sim.errors import ConfigError
from sim.replay.client_limit import peak_in_flight
from sim.run import simulate
from sim.workload import SessionSource, build_workload
from conftest import compose_config

QUIET = ["output.print_summary=false", "output.progress=false"]
CHAT = [
    "workload.prompt_tokens.kind=uniform", "workload.prompt_tokens.low=50", "workload.prompt_tokens.high=400",
    "workload.output_tokens.kind=uniform", "workload.output_tokens.low=5", "workload.output_tokens.high=200",
]


def run(tmp_path: Path, overrides: list[str]):
    cfg = compose_config(overrides + QUIET)
    result = simulate(build_run_spec(cfg), tmp_path, resolved_config(cfg))
    rows = sorted(pq.read_table(tmp_path / "requests.parquet").to_pylist(), key=lambda r: r["request_id"])
    return result, rows


def max_in_flight(rows: list[dict]) -> int:
    """Most requests between arrival and finish at once."""
    return peak_in_flight([r["arrival_s"] for r in rows], [r["finish_s"] for r in rows])


def test_closed_loop_keeps_exactly_concurrency_requests_in_flight(tmp_path):
    users, think_s = 8, 0.5
    result, rows = run(tmp_path, CHAT + [
        "workload.arrival=closed_loop", f"workload.concurrency={users}", f"workload.think_time_s={think_s}",
        "workload.num_requests=200",
    ])
    assert len(rows) == 200 == result.summary["requests"]["finished"]
    assert sum(r["arrival_s"] == 0.0 for r in rows) == users  # every user starts at t = 0
    # Every later request is some request's finish plus the think time, exactly, and each
    # finish starts at most one new request (its user's next).
    later = sorted(r["arrival_s"] for r in rows if r["arrival_s"] > 0)
    nexts = sorted(r["finish_s"] + think_s for r in rows)
    pending = defaultdict(int)
    for t in nexts:
        pending[t] += 1
    for t in later:
        assert pending[t] > 0, t
        pending[t] -= 1
    assert max_in_flight(rows) == users
    # A one-turn session per request: each has its own session id.
    assert sorted(r["session_id"] for r in rows) == list(range(200))
    assert {r["turn"] for r in rows} == {0}


def test_duration_bound_sends_nothing_at_or_after_it(tmp_path):
    result, rows = run(tmp_path, CHAT + [
        "workload.arrival=closed_loop", "workload.concurrency=4", "workload.num_requests=null",
        "workload.duration_s=20",
    ])
    assert rows and max(r["arrival_s"] for r in rows) < 20.0
    assert result.summary["requests"]["unfinished"] == 0  # the engine drains what was sent


def test_rejected_requests_release_their_user(tmp_path):
    # Prompts up to 4,000 tokens against max_model_len 1,024: many are rejected at once.
    result, rows = run(tmp_path, [
        "workload.arrival=closed_loop", "workload.concurrency=3", "workload.num_requests=60",
        "workload.prompt_tokens.kind=uniform", "workload.prompt_tokens.low=100",
        "workload.prompt_tokens.high=4000", "workload.output_tokens.kind=fixed",
        "workload.output_tokens.value=20", "scheduler.max_model_len=1024",
    ])
    counts = result.summary["requests"]
    assert len(rows) == 60 == counts["arrived"] and counts["rejected"] > 20
    assert counts["finished"] + counts["rejected"] == 60


def test_a_user_whose_requests_all_fail_does_not_spin_at_one_instant(tmp_path):
    # No think time, every request refused, bounded by duration only: simulated time never
    # advances, so each user gives up after MAX_INSTANT_REFUSALS refusals in a row.
    result, rows = run(tmp_path, [
        "workload.arrival=closed_loop", "workload.concurrency=2", "workload.num_requests=null",
        "workload.duration_s=100", "workload.prompt_tokens.kind=fixed", "workload.prompt_tokens.value=5000",
        "workload.output_tokens.kind=fixed", "workload.output_tokens.value=10", "scheduler.max_model_len=4096",
    ])
    assert result.summary["requests"]["rejected"] == len(rows) == 2 * MAX_INSTANT_REFUSALS
    assert {r["arrival_s"] for r in rows} == {0.0}


def test_sessions_resend_the_conversation_and_wait_for_each_answer(tmp_path):
    think_s, system = 2.0, 300
    result, rows = run(tmp_path, CHAT + [
        "workload.arrival=poisson", "workload.rate=0.5", "workload.turns.kind=uniform",
        "workload.turns.low=2", "workload.turns.high=5", f"workload.think_time_s={think_s}",
        f"workload.shared_prefix_tokens={system}", "workload.num_requests=120",
    ])
    assert len(rows) == 120 == result.summary["requests"]["finished"]
    sessions = defaultdict(list)
    for r in rows:
        sessions[r["session_id"]].append(r)
    starts = [turns[0]["arrival_s"] for _, turns in sorted(sessions.items())]
    assert starts == sorted(starts)
    for turns in sessions.values():
        turns.sort(key=lambda r: r["turn"])
        assert [r["turn"] for r in turns] == list(range(len(turns)))
        assert turns[0]["prompt_tokens"] > system
        for prev, cur in zip(turns, turns[1:]):
            assert cur["arrival_s"] == prev["finish_s"] + think_s
            # The new prompt is the old one, its answer, and a new message (>= 50 tokens).
            assert cur["prompt_tokens"] >= prev["prompt_tokens"] + prev["output_tokens"] + 50
    # Only the last session may be cut short by the request budget.
    lengths = [len(t) for _, t in sorted(sessions.items())]
    assert all(n >= 2 for n in lengths[:-1])


def test_same_seed_same_bytes(tmp_path):
    overrides = CHAT + ["workload.arrival=closed_loop", "workload.concurrency=5", "workload.num_requests=80",
                        "workload.think_time_s=1", "workload.think_time_kind=exponential",
                        "workload.turns.kind=uniform", "workload.turns.low=1", "workload.turns.high=4"]
    run(tmp_path / "a", overrides)
    run(tmp_path / "b", overrides)
    for name in ("requests.parquet", "timeline.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_the_workload_builds_a_session_source_only_for_client_driven_traffic():
    base = {"name": "t", "num_requests": 10, "prompt_tokens": {"kind": "fixed", "value": 100},
            "output_tokens": {"kind": "fixed", "value": 10}}
    seed = np.random.SeedSequence(0)
    def built(cfg):
        return build_workload(workload_spec(cfg), seed)

    assert isinstance(built({**base, "arrival": "closed_loop"}), SessionSource)
    assert isinstance(built({**base, "turns": {"kind": "fixed", "value": 3}}), SessionSource)
    assert not isinstance(built(base), SessionSource)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"arrival": "closed_loop", "concurrency": 0}, "concurrency must be at least 1"),
        ({"arrival": "closed_loop", "num_requests": None}, "never ends on its own"),
        ({"think_time_s": -1.0}, "think_time_s must be non-negative"),
        ({"think_time_kind": "pareto"}, "unknown kind 'pareto'"),
        ({"turns": {"kind": "fixed", "value": 0}}, "workload.turns.value"),
        ({"shared_prefix_tokens": -5}, "shared_prefix_tokens must be non-negative"),
        ({"shared_prefix_fraction": 1.5}, "shared_prefix_fraction must lie in [0, 1]"),
        ({"arrival": "trace", "trace": "azure_conv", "turns": {"kind": "fixed", "value": 2}}, "synthetic"),
        ({"arrival": "trace", "trace": "azure_conv", "shared_prefix_tokens": 100}, "synthetic"),
    ],
)
def test_bad_client_configs_name_the_key(overrides, fragment):
    cfg = {"name": "t", "arrival": "poisson", "rate": 1.0, "num_requests": 10,
           "prompt_tokens": {"kind": "fixed", "value": 100}, "output_tokens": {"kind": "fixed", "value": 10}}
    cfg.update(overrides)
    with pytest.raises(ConfigError, match=None) as err:
        build_workload(workload_spec(cfg), np.random.SeedSequence(0))
    assert fragment in str(err.value)
