"""Property-based checks of the pieces every workload goes through."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.workload.spec import LengthSpec, WorkloadSpec
from sim.workload.lengths import make_length_sampler
from sim.workload.replay import replay_times, spread_ties

gaps = st.lists(st.sampled_from([0.0, 0.0, 0.5, 1.0, 3.0]), min_size=1, max_size=60)


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(["lognormal", "normal", "exponential"]),
    mean=st.floats(1.0, 1e5),
    rel_std=st.floats(0.0, 5.0),
    lo=st.integers(1, 500),
    width=st.integers(0, 5000),
)
def test_lengths_always_within_bounds(kind: str, mean: float, rel_std: float, lo: int, width: int) -> None:
    lc = LengthSpec(kind=kind, mean=mean, std=mean * rel_std, min=lo, max=lo + width)
    x = make_length_sampler(lc)(np.random.default_rng(0), 500)
    assert x.dtype == np.int64 and x.min() >= lo and x.max() <= lo + width


@settings(max_examples=80, deadline=None)
@given(steps=gaps, offset=st.floats(0.0, 1e6), speedup=st.floats(0.1, 100.0))
def test_replay_starts_at_zero_sorted_and_scaled(steps: list[float], offset: float, speedup: float) -> None:
    raw = offset + np.cumsum(steps)
    cfg = WorkloadSpec(name="p", arrival="trace", trace="x", speedup=speedup)
    rows, t = replay_times(raw, cfg)
    assert rows.tolist() == list(range(len(raw)))
    assert t[0] == 0.0 and (np.diff(t) >= 0).all()
    assert np.allclose(t * speedup, raw - raw[0], rtol=1e-9, atol=1e-6)


@settings(max_examples=80, deadline=None)
@given(steps=gaps)
def test_spread_ties_stays_within_each_bucket(steps: list[float]) -> None:
    t = np.cumsum(steps)
    s = spread_ties(t, 0.5)  # every distinct gap is >= 0.5
    assert (np.diff(s) >= 0).all() and ((s - t >= 0) & (s - t < 0.5)).all()
