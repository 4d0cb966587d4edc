"""Each precision flows through memory planning and the cost model."""

from __future__ import annotations

import pytest

from sim.catalog import hardware_spec_from_config, load_catalog_entry, model_spec_from_config, precision_spec_from_config
from sim.errors import ConfigError
from sim.memory import plan_memory
from sim.step import StepShape, build_step_cost_model

DECODE_1 = StepShape("decode", 1, 1024).batch_summary()
DECODE_64 = StepShape("decode", 64, 1024).batch_summary()
PREFILL = StepShape("prefill", 1, 8192).batch_summary()


def forward_s(precision: str, batch, hardware: str = "h100_sxm", model: str = "llama3_8b") -> float:
    cost_model = build_step_cost_model([f"model={model}", f"hardware={hardware}", f"precision={precision}"])
    return cost_model.step_cost(batch).gpu_time_s


def plan(precision: str, hardware: str = "h100_sxm"):
    hw = hardware_spec_from_config(load_catalog_entry("hardware", hardware))
    model = model_spec_from_config(load_catalog_entry("model", "llama3_8b"))
    prec = precision_spec_from_config(load_catalog_entry("precision", precision), hw)
    return plan_memory(model, hw, prec, 1, block_size=16, gpu_memory_utilization=0.9,
                       max_num_batched_tokens=8192, max_num_seqs=256, max_model_len=8192)


def test_weight_bytes_shrink_with_the_format():
    bf16, fp8, int8, int4 = (plan(p).weight_bytes for p in ("bf16", "fp8", "int8", "int4"))
    # Embedding and lm_head stay bf16 (1.05 GB for Llama-3-8B), the rest shrinks. W8A16 adds
    # one bf16 scale per 128 weights (2/128 = 1.6% of the quantised bytes) that fp8 lacks.
    assert fp8 < int8 < 1.02 * fp8
    assert 0.5 < fp8 / bf16 < 0.6 and 0.3 < int4 / bf16 < 0.4


def test_fp8_kv_cache_doubles_the_kv_capacity():
    bf16, fp8_kv = plan("fp8"), plan("fp8_kv")
    assert fp8_kv.kv_bytes_per_token * 2 == bf16.kv_bytes_per_token
    assert fp8_kv.num_gpu_blocks == pytest.approx(2 * bf16.num_gpu_blocks, rel=0.01)


def test_decode_follows_the_weight_bytes():
    assert forward_s("int4", DECODE_1) < forward_s("int8", DECODE_1) < forward_s("bf16", DECODE_1)
    assert forward_s("fp8", DECODE_1) == pytest.approx(forward_s("int8", DECODE_1), rel=0.15)


def test_prefill_follows_the_tensor_core_rate_and_pays_for_dequantisation():
    # fp8 W8A8 runs the GEMMs at twice the bf16 rate; W4A16 computes in bf16 and widens every
    # weight once per 64-row tile, which costs more than its smaller weights save at 8K rows.
    assert forward_s("fp8", PREFILL) < 0.8 * forward_s("bf16", PREFILL)
    assert forward_s("int4", PREFILL) > forward_s("bf16", PREFILL)


def test_fp8_kv_decode_follows_the_bytes_in_the_flat_model_and_the_measured_kernel_when_calibrated():
    long_ctx = StepShape("decode", 64, 16384).batch_summary()

    def flat(precision):
        model = build_step_cost_model(["model=llama3_8b", "hardware=h100_sxm", f"precision={precision}",
                                       "cost.efficiency=flat"])
        return model.step_cost(long_ctx).gpu_time_s

    assert flat("bf16_kv8") < 0.85 * flat("bf16")  # half the KV bytes at the same bandwidth
    # Calibrated: the measured FP8-KV kernel (Triton, dequantising) reads half the bytes at
    # about half the bandwidth, so long-context decode costs about what bf16 costs.
    assert forward_s("bf16_kv8", long_ctx) == pytest.approx(forward_s("bf16", long_ctx), rel=0.2)


def test_fp4_only_where_the_hardware_has_it():
    assert forward_s("fp4", PREFILL, hardware="b200") < forward_s("fp8", PREFILL, hardware="b200")
    with pytest.raises(ConfigError, match="fp4"):
        build_step_cost_model(["model=llama3_8b", "hardware=h100_sxm", "precision=fp4"])
