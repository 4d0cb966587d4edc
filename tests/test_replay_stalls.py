"""Pauses after the engine in a measured run (sim.replay.stalls), on runs built by hand."""

from __future__ import annotations

import numpy as np
import pytest

from sim.replay.measured import RunBuilder
from sim.replay.stalls import find_output_stalls

STEP_S = 0.030  # the engine's cadence
PAUSE_S = 0.400


def run_of(token_times: list[np.ndarray]):
    b = RunBuilder("t", "t.jsonl", "jsonl")
    for tok in token_times:
        b.add_token_times(0.0, 100, tok.size, tok)
    return b.build()


def steady(n: int, offset: float = 0.0) -> np.ndarray:
    return 0.05 + offset + STEP_S * np.arange(n)


def paused_output(tok: np.ndarray, at: float) -> np.ndarray:
    """The client sees nothing from `at` for PAUSE_S, then what queued meanwhile 5 ms apart."""
    tok = tok.copy()
    queued = (tok >= at) & (tok < at + PAUSE_S)
    tok[queued] = at + PAUSE_S + 0.005 * np.arange(queued.sum())
    return np.maximum.accumulate(tok)


def paused_engine(tok: np.ndarray, at: float) -> np.ndarray:
    """The engine stops for PAUSE_S: every later token comes that much later, at the usual cadence."""
    return np.where(tok >= at, tok + PAUSE_S, tok)


def test_a_pause_of_the_output_path_is_found_and_left_out_of_the_itl():
    runs = [paused_output(steady(200, 0.001 * r), at=2.0) for r in range(8)]
    found = find_output_stalls(run_of(runs))
    assert found is not None and len(found.stalls) == 1
    stall = found.stalls[0]
    assert (stall.num_requests, stall.num_in_flight) == (8, 8)
    assert stall.start_s == pytest.approx(2.0, abs=STEP_S)
    assert stall.end_s - stall.start_s == pytest.approx(PAUSE_S, abs=STEP_S)
    assert found.itl_without_s.max() == pytest.approx(STEP_S)  # the pause and its burst are gone
    assert "1 pause(s) after the engine" in found.note and "ITL p99 is 30.0 ms" in found.note


def test_an_engine_stall_is_not_a_pause_after_it():
    runs = [paused_engine(steady(200, 0.001 * r), at=2.0) for r in range(8)]
    assert find_output_stalls(run_of(runs)) is None


def test_one_request_alone_is_not_a_stall():
    runs = [steady(200, 0.001 * r) for r in range(8)]
    runs[3] = paused_output(runs[3], at=2.0)
    assert find_output_stalls(run_of(runs)) is None


def test_a_run_without_token_times_has_no_stalls():
    b = RunBuilder("t", "t.csv", "csv")
    b.add(0.0, 100, 10, ttft_s=0.05, e2e_s=0.5)
    assert find_output_stalls(b.build()) is None
