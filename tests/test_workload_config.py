"""Workload configs: every shipped YAML composes and runs; bad configs fail with a clear message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import OmegaConf

from sim.config.workload_schema import WorkloadConfig, workload_spec
from sim.errors import ConfigError
from sim.workload import LengthSpec, SessionSource, WorkloadSpec, build_requests, build_workload

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "workload"
YAMLS = sorted(CONFIG_DIR.glob("*.yaml"))
REQUIRED = {
    "poisson_chat", "offline", "gamma_bursty", "diurnal", "azure_conv", "azure_code",
    "mooncake_conversation", "sharegpt_poisson",
}


def test_required_yamls_exist() -> None:
    assert REQUIRED <= {p.stem for p in YAMLS}


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.stem)
def test_yaml_composes_against_the_schema_and_builds(path: Path) -> None:
    # Merging onto the structured schema is the check Hydra applies to a group file.
    cfg = workload_spec(OmegaConf.merge(OmegaConf.structured(WorkloadConfig), OmegaConf.load(path)))
    assert cfg.name == path.stem
    workload = build_workload(cfg, np.random.SeedSequence(0), max_model_len=1_000_000, block_size=16)
    if isinstance(workload, SessionSource):  # closed loop / sessions: turns come as answers do
        session = workload.new_session()
        assert session is not None and session.num_turns >= 1
        spec = session.next_request(0, 0.0)
        assert spec.prompt_tokens >= cfg.shared_prefix_tokens + 1 and spec.output_tokens >= 1
        return
    first = [next(workload) for _ in range(50)]
    assert [r.request_id for r in first] == list(range(50))
    assert all(b.arrival_s >= a.arrival_s for a, b in zip(first, first[1:]))


def base(**kw: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "t", "arrival": "poisson", "rate": 2.0, "num_requests": 10,
        "prompt_tokens": {"kind": "fixed", "value": 100}, "output_tokens": {"kind": "fixed", "value": 10},
    }
    cfg.update(kw)
    return cfg


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"rate": 0.0}, "workload.rate must be positive"),
        ({"rate": -1.0}, "workload.rate must be positive"),
        ({"arrival": "hawkes"}, "unknown kind 'hawkes'"),
        ({"num_requests": None}, "set workload.num_requests or workload.duration_s"),
        ({"num_requests": 0}, "num_requests must be at least 1"),
        ({"duration_s": -5.0}, "duration_s must be positive"),
        ({"prompt_tokens": {"kind": "fixed", "value": -3}}, "prompt_tokens.value must be set"),
        ({"prompt_tokens": {"kind": "lognormal", "mean": 100, "std": 10, "min": -1}}, "min must be at least 1"),
        ({"output_tokens": {"kind": "uniform", "low": -4, "high": 8}}, "1 <= low <= high"),
        ({"output_tokens": {"kind": "normal", "mean": 50, "std": 5, "min": 100, "max": 10}}, "greater than max"),
        ({"output_tokens": {"kind": "zipf", "mean": 5}}, "unknown kind 'zipf'"),
        ({"prompt_tokens": {"kind": "lognormal", "mean": 100}}, "std must be set"),
        ({"arrival": "gamma"}, "workload.cv must be positive"),
        ({"arrival": "offline", "num_requests": None, "duration_s": 10.0}, "set workload.num_requests"),
        ({"arrival": "diurnal", "amplitude": 1.5}, "amplitude must lie in [0, 1]"),
        ({"arrival": "steps"}, "schedule is empty"),
        ({"arrival": "steps", "schedule": [{"t_s": 5, "rate": 1}]}, "must start at t_s: 0"),
        ({"arrival": "ramp", "schedule": [{"t_s": 0, "rate": 1}, {"t_s": 0, "rate": 2}]}, "increase strictly"),
        ({"arrival": "steps", "schedule": [{"t_s": 0, "rate": 1}, {"t_s": 9, "rate": 0}]}, "set workload.duration_s"),
        ({"arrival": "trace"}, "workload.trace is not set"),
        ({"trace": "azure_conv"}, "set arrival: trace"),
        ({"arrival": "trace", "trace": "nope.csv"}, "neither a known dataset"),
        ({"arrival": "trace", "trace": "sharegpt"}, "has no arrival times"),
        ({"arrival": "trace", "trace": "azure_conv", "speedup": 2.0, "target_rate": 3.0}, "not both"),
        ({"arrival": "trace", "trace": "azure_conv", "speedup": 0.0}, "speedup must be positive"),
        ({"arrival": "trace", "trace": "azure_conv", "start_s": 50.0, "end_s": 10.0}, "greater than start_s"),
        ({"arrival": "trace", "trace": "azure_conv", "start_s": 1e6}, "holds no request"),
        ({"arrival": "trace", "trace": "azure_conv", "trace_format": "tsv"}, "unknown format 'tsv'"),
        ({"arrival": "trace", "trace": "azure_conv", "lengths_from": "sharegpt"}, "cannot be combined"),
        ({"arrival": "trace", "trace": "mooncake_conversation", "spread_ties_s": 10.0}, "reorders requests"),
        ({"lengths_from": "wikipedia"}, "neither a known dataset"),
        ({"rte": 3.0}, "rte"),  # misspelt key
    ],
)
def test_bad_config_raises_config_error(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_requests(workload_spec(base(**overrides)), np.random.SeedSequence(0))  # before the first next()
    assert fragment in str(info.value)


def test_the_boundary_takes_a_spec_a_dictconfig_and_a_dict_alike() -> None:
    as_dict = base(num_requests=20)
    specs = [workload_spec(c) for c in (as_dict, OmegaConf.create(as_dict), WorkloadSpec(**{
        **as_dict, "prompt_tokens": LengthSpec(kind="fixed", value=100),
        "output_tokens": LengthSpec(kind="fixed", value=10)}))]
    assert specs[0] == specs[1] == specs[2]
    runs = [list(build_requests(spec, np.random.SeedSequence(3))) for spec in specs]
    assert runs[0] == runs[1] == runs[2]
