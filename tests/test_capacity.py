"""Capacity search: bracketing and bisection, the SLO check, and a real search on llama8b_h100."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.sweep.capacity import confirm_seed, main, search_seed, size_for_target, summarize_seeds
from sim.sweep.probe import ProbeResult, Slo, compose_config, run_probe, slo_samples, tail

SLO = Slo(ttft_p99_s=2.0, tpot_p99_s=0.1)
REQUESTS = 400  # per probe: small for speed, enough that 10% overload shows in the p99


def fake_probe(capacity: float):
    def probe(rate: float, seed: int) -> ProbeResult:
        meets = rate <= capacity
        return ProbeResult(rate, seed, 100, 0, 1.0 if meets else 9.0, 0.01, 0.0, meets, {})
    return probe


def test_bisection_brackets_the_threshold_within_tolerance():
    found = search_seed(fake_probe(7.3), seed=0, start_rate=1.0, rel_tol=0.01)
    assert found.lower_rate <= 7.3 < found.upper_rate
    assert found.upper_rate - found.lower_rate <= 0.01 * found.lower_rate
    down = search_seed(fake_probe(0.3), seed=0, start_rate=16.0, rel_tol=0.01)
    assert down.lower_rate <= 0.3 < down.upper_rate


def test_a_longer_probe_lowers_an_answer_it_cannot_confirm():
    found = search_seed(fake_probe(10.0), seed=0, start_rate=4.0, rel_tol=0.01)
    confirm_seed(fake_probe(9.0), found, step=0.02)  # longer runs: the threshold is lower
    assert found.lower_rate <= 9.0 < found.upper_rate <= 1.0205 * found.lower_rate
    assert found.confirm_steps >= 1
    confirm_seed(fake_probe(0.0), found, step=0.01, max_steps=3)
    assert found.lower_rate is None


def test_unreachable_slo_has_no_capacity():
    found = search_seed(fake_probe(0.0), seed=0, start_rate=1.0, min_rate=0.01)
    assert found.lower_rate is None
    assert summarize_seeds([found])["capacity_rate"] is None


def test_warmup_is_excluded_and_failures_count_as_misses():
    arrival = np.arange(100, dtype=float)  # one request per second
    requests = {
        "status": ["finished"] * 100,
        "arrival_s": arrival,
        "ttft_s": np.where(arrival < 10, 50.0, 0.5),  # slow only during the first 10%
        "tpot_s": np.full(100, 0.02),
    }
    ttft, _, failed = slo_samples(requests, warmup_fraction=0.1)
    assert ttft.size == 90 and failed == 0 and tail(ttft, 0.99) == 0.5
    requests["status"] = ["finished"] * 97 + ["unfinished"] * 2 + ["rejected"]
    ttft, tpot, failed = slo_samples(requests, warmup_fraction=0.1)
    assert failed == 3 and math.isinf(tail(ttft, 0.99)) and math.isinf(tail(tpot, 0.99))


@pytest.fixture(scope="module")
def llama8b():
    return compose_config(["+scenario=llama8b_h100"])


@pytest.fixture(scope="module")
def llama8b_capacity(llama8b):
    def probe(rate, seed):
        return run_probe(llama8b, rate, seed, REQUESTS, SLO)

    def long_probe(rate, seed):
        return run_probe(llama8b, rate, seed, 2 * REQUESTS, SLO)

    found = search_seed(probe, seed=0, start_rate=16.0, rel_tol=0.02)
    confirm_seed(long_probe, found, step=0.02)
    return found


def test_llama8b_capacity_meets_the_slo_and_ten_percent_more_misses(llama8b, llama8b_capacity):
    rate = llama8b_capacity.lower_rate
    assert 8 < rate < 80  # chat traffic on one H100: tens of requests/s
    at = run_probe(llama8b, rate, 0, 2 * REQUESTS, SLO)  # the confirmation's length
    above = run_probe(llama8b, 1.1 * rate, 0, 2 * REQUESTS, SLO)
    assert at.meets and at.ttft_p99_s <= 2.0 and at.tpot_p99_s <= 0.1 and at.num_failed == 0
    assert not above.meets and above.ttft_p99_s > 2.0
    assert above.output_tokens_per_s > 0.95 * at.output_tokens_per_s


def test_replicas_for_a_target_rate_hold_it(llama8b, llama8b_capacity):
    capacity = llama8b_capacity.lower_rate
    sizing = size_for_target(llama8b, SLO, capacity, 2.5 * capacity, seeds=[0], num_requests=REQUESTS)
    assert sizing.replicas in (2, 3, 4) and sizing.gpus == sizing.replicas * 1
    final = [r for n, r in sizing.checks if n == sizing.replicas]
    assert final and all(r.meets for r in final)
    assert sizing.usd_per_hour == pytest.approx(2.99 * sizing.gpus)


def test_cli_reports_capacity_and_writes_json(tmp_path, capsys):
    out = tmp_path / "cap.json"
    code = main(["+scenario=llama8b_h100", "scheduler.max_num_seqs=32", "--requests", "200",
                 "--tol", "0.1", "--ttft-p99", "2", "--tpot-p99", "0.1", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "capacity" in text and "meets" in text and "misses" in text
    assert out.exists()
    assert main(["+scenario=no_such_scenario"]) == 2
