"""Simulated times past float64's resolution of an engine step are refused: at 1e20 s a 10 ms
step leaves the clock unchanged, so every latency would read 0 and goodput 100%."""

from __future__ import annotations

import numpy as np
import pytest

from sim.config.build import build_run_spec
from sim.errors import ConfigError
from sim.workload import LengthSpec, RatePoint, WorkloadSpec, build_requests
from sim.workload.arrivals import RenewalArrivals, bounded_chunks
from sim.workload.request_spec import MAX_ARRIVAL_S
from sim.workload.validate import validate
from conftest import compose_config


def test_float64_still_resolves_a_microsecond_at_the_bound_and_not_far_past_it():
    assert np.spacing(MAX_ARRIVAL_S) < 1e-6
    assert 1e20 + 0.01 == 1e20  # what the bound prevents


def test_a_tiny_rate_is_refused_on_the_command_line():
    with pytest.raises(ConfigError, match=r"workload.rate: .*past 2\*\*32 s"):
        build_run_spec(compose_config(["workload.rate=1e-20"]))


@pytest.mark.parametrize("changes, key", [
    ({"arrival": "poisson", "rate": 1e-9, "num_requests": 10}, "workload.rate"),
    ({"arrival": "constant", "rate": 1.0, "num_requests": 10**10}, "workload.rate"),
    ({"arrival": "poisson", "rate": 1e-12, "duration_s": 10.0**13}, "workload.duration_s"),
    ({"arrival": "steps", "num_requests": 5, "schedule": [RatePoint(0, 1), RatePoint(1e12, 2)]}, "workload.schedule"),
    ({"arrival": "closed_loop", "num_requests": 5, "think_time_s": 1e15}, "workload.think_time_s"),
])
def test_every_source_of_late_times_is_refused(changes, key):
    cfg = WorkloadSpec(name="w", prompt_tokens=LengthSpec(value=4), output_tokens=LengthSpec(value=4), **changes)
    with pytest.raises(ConfigError, match=key):
        validate(cfg)


def test_a_trace_stretched_past_the_bound_is_refused(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0,5,5\n1,5,5\n")
    cfg = WorkloadSpec(name="t", arrival="trace", trace=str(path), speedup=1e-12)
    with pytest.raises(ConfigError, match="replay ends at 1e\\+12 s"):
        list(build_requests(cfg, np.random.SeedSequence(0)))


def test_a_random_draw_past_the_bound_is_refused_while_generating():
    process = RenewalArrivals("poisson", 1e-9, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="past 2\\*\\*32 s"):
        list(bounded_chunks(process, 100, None))


def test_ordinary_rates_are_untouched():
    cfg = WorkloadSpec(name="w", rate=1e-3, num_requests=100, prompt_tokens=LengthSpec(value=4),
                         output_tokens=LengthSpec(value=4))
    assert len(list(build_requests(cfg, np.random.SeedSequence(0)))) == 100
