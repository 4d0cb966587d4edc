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


def test_a_decode_that_cannot_grow_alone_does_not_stop_the_engine(tmp_path):
    """Found by the test above: with PP2, a CPU KV tier and 128 blocks of 4 tokens, a decode
    that cannot grow is the only running request, and requests waiting behind it with their
    loads landed hold the blocks. It preempted itself, and nothing ran that step (waiting
    requests are admitted only in a step that preempted none, as in vLLM), which once stopped
    the run as stuck. It now takes the loaded requests' blocks
    (`Scheduler._release_loaded_blocks`). The run must finish every request."""
    deployment = {
        "kv_offload": "cpu", "kv_offload.cpu_size_gib": 0.05, "scheduler.block_size": 4,
        "scheduler.max_model_len": 513, "scheduler.max_num_batched_tokens": 513,
        "scheduler.enable_chunked_prefill": False, "scheduler.max_num_seqs": 2,
        "scheduler.num_gpu_blocks_override": 129, "scheduler.enable_prefix_caching": True, "seed": 20339,
    }  # fmt: skip
    workload = {
        "workload.concurrency": 1, "workload.turns.kind": "uniform", "workload.turns.low": 1,
        "workload.turns.high": 3, "workload.arrival": "poisson", "workload.num_requests": 7,
        "workload.rate": 1.0, "workload.prompt_tokens.kind": "fixed", "workload.prompt_tokens.value": 86,
        "workload.output_tokens.kind": "fixed", "workload.output_tokens.value": 43,
    }  # fmt: skip
    out = tmp_path / "run"
    spec, result = run_random(out, ("parallel.pp=2",), deployment, workload)
    counts = result.summary["requests"]
    assert result.complete and counts["finished"] == counts["arrived"] == 7
    assert result.summary["kv_offload"]["loads"] > 0
    check_tables(out, spec, result)
