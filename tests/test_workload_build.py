"""The entry point: determinism, ordering, laziness, speed, and oversized requests."""

from __future__ import annotations

import itertools
import logging
import pickle

import numpy as np
import pytest

from sim.workload import LengthSpec, RequestSpec, WorkloadSpec, build_requests

CHAT = dict(
    prompt_tokens=LengthSpec(kind="lognormal", mean=1000, std=800, min=16, max=8192),
    output_tokens=LengthSpec(kind="lognormal", mean=250, std=200, min=4, max=2048),
)


def chat(**kw: object) -> WorkloadSpec:
    return WorkloadSpec(name="chat", **{**CHAT, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "cfg",
    [
        chat(arrival="poisson", rate=3.0, num_requests=5000),
        chat(arrival="gamma", rate=3.0, cv=2.5, num_requests=5000),
        chat(arrival="diurnal", rate=3.0, period_s=600.0, duration_s=1200.0),
        WorkloadSpec(name="sg", arrival="poisson", rate=3.0, num_requests=5000, lengths_from="arxiv"),
    ],
    ids=["poisson", "gamma", "diurnal", "empirical"],
)
def test_same_seed_same_bytes_other_seed_other_requests(cfg: WorkloadSpec) -> None:
    seed = np.random.SeedSequence(1234)
    a = pickle.dumps(list(build_requests(cfg, seed)))
    b = pickle.dumps(list(build_requests(cfg, seed)))  # same object again: not consumed by spawning
    c = pickle.dumps(list(build_requests(cfg, np.random.SeedSequence(1234))))
    assert a == b == c
    assert a != pickle.dumps(list(build_requests(cfg, np.random.SeedSequence(1235))))
    assert seed.n_children_spawned == 0


def test_ids_consecutive_and_arrivals_sorted() -> None:
    reqs = list(build_requests(chat(arrival="gamma", rate=50.0, cv=4.0, num_requests=40_000), np.random.SeedSequence(0)))
    assert [r.request_id for r in reqs] == list(range(40_000))
    t = np.array([r.arrival_s for r in reqs])
    assert (np.diff(t) >= 0).all()
    assert all(isinstance(r.prompt_tokens, int) and isinstance(r.arrival_s, float) for r in reqs[:10])


def test_huge_rate_duration_bound_is_lazy() -> None:
    """10^12 requests would never fit in memory: taking a few must still work (a list of them
    would never return). How fast is benchmarks/bench_workload.py's to say."""
    it = build_requests(chat(arrival="poisson", rate=1e6, duration_s=1e6), np.random.SeedSequence(0))
    head = list(itertools.islice(it, 100_000))
    assert head[-1].request_id == 99_999 and head[-1].arrival_s < 1.0


def test_100k_requests_stream_in_order() -> None:
    """Correctness only: generation speed is measured by benchmarks/bench_workload.py."""
    it = build_requests(chat(arrival="poisson", rate=10.0, num_requests=100_000), np.random.SeedSequence(0))
    assert not isinstance(it, (list, tuple))  # a stream, drawn chunk by chunk
    last = -1.0
    n = 0
    for n, r in enumerate(it, start=1):
        assert r.arrival_s >= last
        last = r.arrival_s
    assert n == 100_000


def test_oversized_requests_are_yielded_and_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    cfg = WorkloadSpec(
        name="big", arrival="constant", rate=1.0, num_requests=10,
        prompt_tokens=LengthSpec(kind="fixed", value=3000), output_tokens=LengthSpec(kind="fixed", value=2000),
    )
    with caplog.at_level(logging.WARNING, logger="sim.workload.build"):
        reqs = list(build_requests(cfg, np.random.SeedSequence(0), max_model_len=4096))
    assert len(reqs) == 10  # not dropped: the engine rejects and counts them
    assert len([r for r in caplog.records if "max_model_len=4096" in r.getMessage()]) == 1


def test_synthetic_specs_have_no_prefix_or_line() -> None:
    r = next(build_requests(chat(arrival="offline", num_requests=3), np.random.SeedSequence(0)))
    assert r == RequestSpec(0, 0.0, r.prompt_tokens, r.output_tokens)
