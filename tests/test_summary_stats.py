"""Weighted percentiles equal numpy's on the expanded sample."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.metrics.summary import PERCENTILES, distribution


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.0, 10.0, allow_nan=False), st.integers(1, 50)), min_size=1, max_size=40
    )
)
def test_counted_distribution_equals_the_expanded_one(pairs):
    values = np.array([v for v, _ in pairs])
    counts = np.array([c for _, c in pairs], dtype=np.int64)
    expanded = np.repeat(values, counts)
    got = distribution(values, counts)
    assert np.isclose(got["mean"], expanded.mean())
    for p, want in zip(PERCENTILES, np.percentile(expanded, PERCENTILES)):
        assert np.isclose(got[f"p{p}"], want, rtol=1e-12, atol=1e-12)


def test_non_finite_values_are_left_out_and_empty_gives_none():
    assert distribution(np.array([np.nan, 1.0]))["p50"] == 1.0
    assert distribution(np.array([]))["mean"] is None
