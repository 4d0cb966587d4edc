"""Parametric token-length samplers: one LengthSpec in, a vectorised draw function out.

Samplers draw whole chunks with NumPy (never one Python call per request) and always return
int64 arrays of lengths >= 1; random kinds are clipped to the configured [min, max], a fixed
value is used as given.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from sim.workload.spec import LengthSpec
from sim.workload.request_spec import MAX_TOKENS

LengthSampler = Callable[[np.random.Generator, int], np.ndarray]
"""Draw `n` lengths from the given stream; returns an int64 array of shape (n,)."""


def lognormal_params(mean: float, std: float) -> tuple[float, float]:
    """(mu, sigma) of the underlying normal for a log-normal with this mean and std.

    Configs speak in the observable mean and spread of token counts; NumPy wants the
    parameters of log(X): sigma^2 = ln(1 + std^2 / mean^2), mu = ln(mean) - sigma^2 / 2.
    """
    sigma2 = math.log1p((std / mean) ** 2)
    return math.log(mean) - sigma2 / 2.0, math.sqrt(sigma2)


def make_length_sampler(lc: LengthSpec) -> LengthSampler:
    """Build the sampler for a validated LengthSpec (see `sim.workload.validate`)."""
    if lc.kind == "fixed":
        # An explicit length is used as given: min/max (often inherited from the YAML this
        # override sits on) must not silently replace it.
        value = int(lc.value)  # type: ignore[arg-type]
        return lambda rng, n: np.full(n, value, dtype=np.int64)
    raw = _raw_sampler(lc)
    lo = max(1, lc.min)
    hi = lc.max

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        x = np.rint(raw(rng, n))
        # Clip in float space first so a huge draw cannot overflow the int64 cast.
        x = np.clip(x, lo, hi if hi is not None else float(MAX_TOKENS))
        return x.astype(np.int64)

    return sample


def _raw_sampler(lc: LengthSpec) -> Callable[[np.random.Generator, int], np.ndarray]:
    """The unclipped, unrounded law for `lc.kind` (float array, or int array for uniform)."""
    if lc.kind == "uniform":
        low, high = int(lc.low), int(lc.high)  # type: ignore[arg-type]
        return lambda rng, n: rng.integers(low, high, size=n, endpoint=True).astype(np.float64)
    if lc.kind == "lognormal":
        mu, sigma = lognormal_params(float(lc.mean), float(lc.std))  # type: ignore[arg-type]
        return lambda rng, n: rng.lognormal(mu, sigma, size=n)
    if lc.kind == "normal":
        mean, std = float(lc.mean), float(lc.std)  # type: ignore[arg-type]
        return lambda rng, n: rng.normal(mean, std, size=n)
    if lc.kind == "exponential":
        scale = float(lc.mean)  # type: ignore[arg-type]
        return lambda rng, n: rng.exponential(scale, size=n)
    raise ValueError(f"unvalidated length kind {lc.kind!r}")
