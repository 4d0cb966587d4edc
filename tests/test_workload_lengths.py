"""Parametric and empirical length samplers: moments, clipping, integer output."""

from __future__ import annotations

import numpy as np
import pytest

from sim.workload.spec import LengthSpec
from sim.workload.empirical import EmpiricalLengths
from sim.workload.lengths import lognormal_params, make_length_sampler
from sim.workload.registry import BUILTIN_FORMATS, DATASETS, traces_dir
from sim.workload.trace_readers import load_table


def draw(lc: LengthSpec, n: int = 20_000, seed: int = 0) -> np.ndarray:
    return make_length_sampler(lc)(np.random.default_rng(seed), n)


def test_lognormal_params_recover_mean_and_std() -> None:
    mu, sigma = lognormal_params(1000.0, 800.0)
    mean = np.exp(mu + sigma**2 / 2)
    std = np.sqrt((np.exp(sigma**2) - 1) * np.exp(2 * mu + sigma**2))
    assert mean == pytest.approx(1000.0)
    assert std == pytest.approx(800.0)


def test_lognormal_mean_within_tolerance() -> None:
    x = draw(LengthSpec(kind="lognormal", mean=1000, std=800))
    # Standard error of the mean is 800 / sqrt(20k) ~ 5.7 tokens; 3% is ~5 standard errors.
    assert x.mean() == pytest.approx(1000, rel=0.03)
    assert x.std() == pytest.approx(800, rel=0.08)


@pytest.mark.parametrize(
    "lc",
    [
        LengthSpec(kind="lognormal", mean=500, std=2000, min=16, max=1024),
        LengthSpec(kind="normal", mean=100, std=300, min=8, max=200),
        LengthSpec(kind="exponential", mean=400, min=32, max=600),
        LengthSpec(kind="uniform", low=1, high=5000, min=10, max=20),
    ],
)
def test_every_kind_is_clipped_and_integral(lc: LengthSpec) -> None:
    x = draw(lc)
    assert x.dtype == np.int64
    assert x.min() == lc.min and x.max() == lc.max  # wide laws hit both bounds


def test_normal_never_yields_zero_or_negative() -> None:
    x = draw(LengthSpec(kind="normal", mean=2, std=50))
    assert x.min() >= 1


def test_uniform_is_inclusive_and_fixed_is_constant() -> None:
    u = draw(LengthSpec(kind="uniform", low=3, high=5))
    assert set(np.unique(u).tolist()) == {3, 4, 5}
    assert set(draw(LengthSpec(kind="fixed", value=128)).tolist()) == {128}
    # A fixed value is explicit: bounds inherited from a base YAML do not bend it.
    assert set(draw(LengthSpec(kind="fixed", value=1, min=4, max=2048)).tolist()) == {1}


def test_exponential_mean() -> None:
    assert draw(LengthSpec(kind="exponential", mean=300)).mean() == pytest.approx(300, rel=0.03)


def test_empirical_pairs_are_rows_of_the_dataset() -> None:
    ds = DATASETS["sharegpt"]
    fmt = BUILTIN_FORMATS[ds.format]
    table = load_table(f"{traces_dir()}/{ds.relpath}", fmt.reader, fmt.columns, with_arrival=False)
    assert len(table) == 30_731
    rows = set(zip(table.prompt_tokens.tolist(), table.output_tokens.tolist()))
    p, o = EmpiricalLengths(table).sample(np.random.default_rng(1), 20_000)
    assert all(pair in rows for pair in zip(p.tolist(), o.tolist()))
    assert p.mean() == pytest.approx(2340.0, rel=0.03)  # README: ShareGPT prompt mean 2,340
    assert o.mean() == pytest.approx(438.7, rel=0.03)
