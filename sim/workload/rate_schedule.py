"""Time-varying arrival rates: step schedules, linear ramps and a diurnal sinusoid.

Each is realised as a non-homogeneous Poisson process by thinning (Lewis & Shedler): draw
candidates from a homogeneous process at the peak rate, keep each with probability
rate(t) / peak. Exact for any bounded rate function and needs no integral of the rate.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from sim.workload.spec import RatePoint

RateFn = Callable[[np.ndarray], np.ndarray]
"""Vectorised rate function: times (s) -> rates (req/s)."""


def step_rate(points: Sequence[RatePoint]) -> RateFn:
    """Rate `points[i].rate` on [t_i, t_{i+1}); the last rate holds forever."""
    t = np.array([p.t_s for p in points], dtype=np.float64)
    r = np.array([p.rate for p in points], dtype=np.float64)
    return lambda times: r[np.searchsorted(t, times, side="right") - 1]


def ramp_rate(points: Sequence[RatePoint]) -> RateFn:
    """Rate interpolated linearly between the points; the last rate holds forever."""
    t = np.array([p.t_s for p in points], dtype=np.float64)
    r = np.array([p.rate for p in points], dtype=np.float64)
    return lambda times: np.interp(times, t, r)


def diurnal_rate(mean_rate: float, amplitude: float, period_s: float, phase_s: float) -> RateFn:
    """rate * (1 + amplitude * sin(2 pi (t - phase_s) / period_s)): a day compressed to a period."""
    omega = 2.0 * math.pi / period_s
    return lambda times: mean_rate * (1.0 + amplitude * np.sin(omega * (times - phase_s)))


class ThinnedArrivals:
    """Non-homogeneous Poisson arrivals with rate `rate_fn` bounded above by `peak_rate`.

    Candidate gaps and acceptance draws come from two separate streams so that each stream
    is consumed sequentially, whatever the chunk sizes.
    """

    def __init__(
        self, rate_fn: RateFn, peak_rate: float, rng: np.random.Generator, accept_rng: np.random.Generator
    ):
        self._rate_fn = rate_fn
        self._peak = peak_rate
        self._rng = rng
        self._accept_rng = accept_rng
        self._t = 0.0

    def next_chunk(self, n: int) -> np.ndarray:
        """Thin `n` candidates; returns the accepted ones (possibly none)."""
        candidates = self._t + np.cumsum(self._rng.exponential(1.0 / self._peak, size=n))
        self._t = float(candidates[-1])
        keep = self._accept_rng.random(n) * self._peak < self._rate_fn(candidates)
        return candidates[keep]


def schedule_process(
    kind: str,
    *,
    rate: float,
    schedule: Sequence[RatePoint],
    amplitude: float,
    period_s: float,
    phase_s: float,
    rng: np.random.Generator,
    accept_rng: np.random.Generator,
) -> ThinnedArrivals:
    """The thinned process for arrival kind `steps`, `ramp` or `diurnal` (validated config)."""
    if kind == "diurnal":
        fn = diurnal_rate(rate, amplitude, period_s, phase_s)
        peak = rate * (1.0 + amplitude)
    else:
        fn = step_rate(schedule) if kind == "steps" else ramp_rate(schedule)
        peak = max(p.rate for p in schedule)
    return ThinnedArrivals(fn, peak, rng, accept_rng)
