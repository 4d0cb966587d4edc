"""Two counts that random runs found wrong, pinned by the configurations that showed them."""

from __future__ import annotations

import pyarrow.parquet as pq

from sim.config.build import build_run_spec, resolved_config
from sim.run import simulate
from test_random_runs import check_tables, compose, run_random


def test_tokens_delivered_after_the_horizon_are_not_counted_as_generated(tmp_path):
    # Mixtral TP2, horizon 0.3 s: request 3's last step is applied before the horizon but its
    # tokens reach the client after it, so it is unfinished with fewer tokens than it asked.
    deployment = {
        "kv_offload": "none", "scheduler.block_size": 4, "scheduler.max_model_len": 217,
        "scheduler.max_num_batched_tokens": 217, "scheduler.enable_chunked_prefill": False,
        "scheduler.max_num_seqs": 2, "scheduler.num_gpu_blocks_override": 55,
        "scheduler.enable_prefix_caching": False, "horizon_s": 0.3, "seed": 345233,
        "output.write_steps": True,
    }  # fmt: skip
    workload = {"workload": "azure_conv", "workload.num_requests": 5, "workload.speedup": 50.0}
    spec, result = run_random(tmp_path, ("model=mixtral_8x7b", "parallel=tp2"), deployment, workload)
    rows = {r["request_id"]: r for r in pq.read_table(tmp_path / "requests.parquet").to_pylist()}
    assert rows[3]["status"] == "unfinished" and rows[3]["output_tokens_generated"] < rows[3]["output_tokens"]
    check_tables(tmp_path, spec, result)


def test_a_pd_request_refused_by_decode_keeps_its_prefill_preemptions_in_the_count(tmp_path):
    # Request 2 (prompt + 4 tokens > max_model_len 237) is prefilled beside another request
    # (chunks of 8: both whole prompts fit when it is admitted, not once both have grown),
    # preempted once on the prefill instance, then refused by the decode instance: the
    # summary counts that preemption.
    items = ["+deployment.pools.p={role:prefill,replicas:1,tp:1}",
             "+deployment.pools.d={role:decode,replicas:2,tp:1}"]  # fmt: skip
    values = {
        "scheduler.block_size": 4, "scheduler.max_model_len": 237,
        "scheduler.max_num_batched_tokens": 16, "scheduler.max_num_seqs": 2,
        "scheduler.long_prefill_token_threshold": 8,
        "scheduler.num_gpu_blocks_override": 62, "scheduler.enable_prefix_caching": False,
        "seed": 5, "output.write_steps": True, "workload.arrival": "poisson",
        "workload.num_requests": 3, "workload.rate": 3.0, "workload.cv": 2.0,
        "workload.prompt_tokens.kind": "uniform", "workload.prompt_tokens.low": 230,
        "workload.prompt_tokens.high": 235, "workload.output_tokens.kind": "uniform",
        "workload.output_tokens.low": 1, "workload.output_tokens.high": 1,
    }  # fmt: skip
    cfg = compose((), [*items, *(f"{k}={v}" for k, v in values.items())])
    spec = build_run_spec(cfg)
    result = simulate(spec, tmp_path, resolved_config(cfg))
    rows = pq.read_table(tmp_path / "requests.parquet").to_pylist()
    rejected = [r for r in rows if r["status"] == "rejected"]
    assert rejected and rejected[0]["preemptions"] == 1
    assert result.summary["requests"]["preemptions"] == sum(r["preemptions"] for r in rows)
    check_tables(tmp_path, spec, result, pd=True)
