"""Arrival processes: rates, variability, bounds and rate schedules."""

from __future__ import annotations

import numpy as np
import pytest

from sim.workload import RatePoint, WorkloadSpec, build_requests
from sim.workload.spec import LengthSpec
from sim.workload.rate_schedule import diurnal_rate, ramp_rate, step_rate

FIXED = LengthSpec(kind="fixed", value=10)


def arrivals(**kw: object) -> np.ndarray:
    cfg = WorkloadSpec(name="t", prompt_tokens=FIXED, output_tokens=FIXED, **kw)  # type: ignore[arg-type]
    return np.array([r.arrival_s for r in build_requests(cfg, np.random.SeedSequence(7))])


def cv(x: np.ndarray) -> float:
    return float(x.std() / x.mean())


def test_poisson_gaps_mean_and_cv() -> None:
    gaps = np.diff(arrivals(arrival="poisson", rate=5.0, num_requests=20_001))
    assert gaps.mean() == pytest.approx(0.2, rel=0.03)
    assert cv(gaps) == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("target_cv", [0.5, 3.0])
def test_gamma_gaps_have_the_requested_cv(target_cv: float) -> None:
    gaps = np.diff(arrivals(arrival="gamma", rate=2.0, cv=target_cv, num_requests=40_001))
    assert gaps.mean() == pytest.approx(0.5, rel=0.05)
    assert cv(gaps) == pytest.approx(target_cv, rel=0.08)


def test_constant_is_evenly_spaced() -> None:
    t = arrivals(arrival="constant", rate=4.0, num_requests=1000)
    assert np.allclose(t, np.arange(1, 1001) / 4.0, rtol=0, atol=1e-12)


def test_offline_puts_everything_at_zero() -> None:
    t = arrivals(arrival="offline", num_requests=500)
    assert len(t) == 500 and not t.any()


def test_bounds_whichever_comes_first() -> None:
    t = arrivals(arrival="poisson", rate=10.0, duration_s=50.0)
    assert t.max() < 50.0 and len(t) == pytest.approx(500, rel=0.2)
    assert len(arrivals(arrival="poisson", rate=10.0, duration_s=50.0, num_requests=100)) == 100
    assert len(arrivals(arrival="poisson", rate=10.0, duration_s=5.0, num_requests=10_000)) < 100


def test_longer_run_extends_shorter_one() -> None:
    """Streams are consumed sequentially: the first 100 requests do not depend on the bound."""
    short = arrivals(arrival="gamma", rate=3.0, cv=2.0, num_requests=100)
    long = arrivals(arrival="gamma", rate=3.0, cv=2.0, num_requests=50_000)
    assert np.array_equal(short, long[:100])


def test_step_schedule_rates() -> None:
    sched = [RatePoint(0, 20.0), RatePoint(100, 0.0), RatePoint(200, 50.0)]
    t = arrivals(arrival="steps", schedule=sched, duration_s=300.0)
    counts = np.histogram(t, bins=[0, 100, 200, 300])[0]
    assert counts[0] == pytest.approx(2000, rel=0.08)
    assert counts[1] == 0
    assert counts[2] == pytest.approx(5000, rel=0.05)


def test_ramp_schedule_rates() -> None:
    t = arrivals(arrival="ramp", schedule=[RatePoint(0, 0.0), RatePoint(200, 100.0)], duration_s=300.0)
    counts = np.histogram(t, bins=[0, 100, 200, 300])[0]
    # Integral of the rate: 2,500 on the first half of the ramp, 7,500 on the second, then 10,000.
    assert counts == pytest.approx([2500, 7500, 10_000], rel=0.05)


def test_diurnal_follows_the_sinusoid() -> None:
    t = arrivals(arrival="diurnal", rate=20.0, amplitude=0.8, period_s=400.0, duration_s=800.0)
    assert len(t) == pytest.approx(16_000, rel=0.03)  # mean rate 20 for 800 s
    # Expected count in the rising half of a cycle: integral of 20 (1 + 0.8 sin) over [0, 200).
    rising = 20 * (200 + 0.8 * 400 / np.pi)
    by_phase = np.histogram(t % 400.0, bins=[0, 200, 400])[0]
    assert by_phase == pytest.approx([2 * rising, 16_000 - 2 * rising], rel=0.05)


def test_rate_functions() -> None:
    pts = [RatePoint(0, 1.0), RatePoint(10, 3.0)]
    assert step_rate(pts)(np.array([0.0, 9.9, 10.0, 1e6])).tolist() == [1.0, 1.0, 3.0, 3.0]
    assert ramp_rate(pts)(np.array([5.0, 20.0])).tolist() == [2.0, 3.0]
    assert diurnal_rate(2.0, 0.5, 4.0, 0.0)(np.array([1.0, 3.0])) == pytest.approx([3.0, 1.0])
