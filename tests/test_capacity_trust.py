"""Capacity search answers honestly: SLOs that never bind give a lower bound, not a capacity,
and arguments that cannot describe a search are refused (exit 2, one error line)."""

from __future__ import annotations

import math

import pytest

from sim.errors import ConfigError
from sim.sweep.capacity import main, search_seed, summarize_seeds
from sim.sweep.probe import ProbeResult, Slo


def always_meets(rate: float, seed: int) -> ProbeResult:
    return ProbeResult(rate, seed, 100, 0, 0.1, 0.01, 0.0, True, {})


def threshold(capacity: float):
    def probe(rate: float, seed: int) -> ProbeResult:
        meets = rate <= capacity
        return ProbeResult(rate, seed, 100, 0, 1.0 if meets else 9.0, 0.01, 0.0, meets, {})
    return probe


def test_slos_that_never_bind_give_a_lower_bound_not_a_capacity():
    found = search_seed(always_meets, seed=0, start_rate=8.0)
    assert found.upper_rate is None
    answer = summarize_seeds([found])
    assert answer["capacity_rate"] is None and answer["slo_never_bound"]
    assert answer["capacity_at_least_rate"] == found.lower_rate
    assert answer["bracket_width_rate"] is None


def test_a_seed_that_binds_lower_than_an_unbounded_one_still_gives_a_capacity():
    bound = search_seed(threshold(5.0), seed=0, start_rate=1.0, rel_tol=0.01)
    unbound = search_seed(always_meets, seed=1, start_rate=1.0)
    answer = summarize_seeds([bound, unbound])
    assert answer["capacity_rate"] == bound.lower_rate and not answer["slo_never_bound"]


def test_the_report_says_the_slos_never_bound(capsys, monkeypatch):
    import sim.sweep.capacity as capacity

    monkeypatch.setattr(capacity, "run_probe", lambda cfg, rate, seed, n, slo: always_meets(rate, seed))
    assert main(["+scenario=llama8b_h100", "--confirm-factor", "1"]) == 0
    out = capsys.readouterr().out
    assert "never bound up to the largest rate tried" in out and "capacity   at least" in out


@pytest.mark.parametrize("argv, fragment", [
    (["--seeds", "0"], "--seeds must be at least 1"),
    (["--warmup", "1.5"], "--warmup is a fraction"),
    (["--warmup", "-0.1"], "--warmup is a fraction"),
    (["--ttft-p99", "-1"], "--ttft-p99 must be a finite number > 0"),
    (["--tpot-p99", "nan"], "--tpot-p99 must be a finite number > 0"),
    (["--start-rate", "0"], "--start-rate must be a finite number > 0"),
    (["--target-rate", "-3"], "--target-rate must be a finite number > 0"),
    (["--tol", "0"], "--tol must be a finite number > 0"),
    (["--requests", "0"], "--requests must be at least 1"),
])
def test_arguments_that_cannot_describe_a_search_are_refused(capsys, argv, fragment):
    assert main(["+scenario=llama8b_h100", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("kwargs", [
    {"ttft_p99_s": -1.0, "tpot_p99_s": 0.1}, {"ttft_p99_s": math.nan, "tpot_p99_s": 0.1},
    {"ttft_p99_s": 1.0, "tpot_p99_s": math.inf}, {"ttft_p99_s": 1.0, "tpot_p99_s": 0.1, "warmup_fraction": 1.0},
])
def test_an_slo_that_could_never_be_met_is_refused_in_code_too(kwargs):
    with pytest.raises(ConfigError):
        Slo(**kwargs)
