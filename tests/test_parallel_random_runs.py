"""The random-run invariants of test_random_runs on parallel layouts: pipeline stages (a
request samples once every pp steps, pp + 1 steps in flight), DP attention with expert
parallelism, MLA with DeepSeek's dense-then-MoE layers, and TP across two nodes."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_random_runs import check_tables, deployments, run_random, workloads

LAYOUTS = (
    ("parallel.pp=2",),
    ("parallel.pp=3", "parallel.tp=2", "scheduler.async_scheduling=false"),
    ("model=qwen3_30b_a3b", "parallel.tp=1", "parallel.dp=2", "parallel.ep=2"),
    ("model=deepseek_v3", "hardware=h200", "precision=fp8", "parallel=tp8"),
    ("model=deepseek_v3", "hardware=h200", "precision=fp8", "parallel=dp8_ep8"),
    ("parallel.tp=16",),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(choices=st.sampled_from(LAYOUTS), deployment=deployments(), workload=workloads(), n=st.integers(0, 10**9))
def test_parallel_layouts_keep_every_invariant(tmp_path, choices, deployment, workload, n):
    out = tmp_path / str(n)
    spec, result = run_random(out, choices, deployment, workload)
    assert result.complete
    check_tables(out, spec, result)
