"""The roofline cost model against FLOPs and bytes worked out by hand from the shapes.

Run this file directly (`python tests/test_cost_model.py`) for a by-hand timing of step_cost.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.config.schema import CostConfig
from sim.cost.batch import BatchSummary
from sim.cost.breakdown import BOUND_COMPUTE, BOUND_LATENCY, BOUND_MEMORY, OP_CLASSES, ZERO_OP
from sim.cost.efficiency import FLAT_COST_SOURCE, FLAT_PROVENANCE, FlatEfficiency
from sim.cost.operators import expected_active_experts
from sim.cost.roofline import RooflineCostModel, build_cost_model
from sim.errors import ConfigError
from sim.hardware_spec import HardwareSpec
from sim.model_spec import ModelSpec
from sim.precision import PrecisionSpec

# A one-layer toy: hidden 1024, 8 query heads and 2 KV heads of 128, MLP 4096, vocab 32000.
TINY = ModelSpec(
    name="tiny",
    num_hidden_layers=1,
    hidden_size=1024,
    num_attention_heads=8,
    num_key_value_heads=2,
    head_dim=128,
    intermediate_size=4096,
    vocab_size=32000,
)
TINY_MOE = ModelSpec(
    name="tiny-moe",
    num_hidden_layers=1,
    hidden_size=1024,
    num_attention_heads=8,
    num_key_value_heads=2,
    head_dim=128,
    intermediate_size=2048,
    vocab_size=32000,
    num_local_experts=8,
    num_experts_per_tok=2,
)
LLAMA_8B = ModelSpec(
    name="llama-8b-like",
    num_hidden_layers=32,
    hidden_size=4096,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    intermediate_size=14336,
    vocab_size=128256,
)
H100_LIKE = HardwareSpec(
    name="h100-like",
    peak_flops={"bf16": 989e12, "fp8": 1979e12},
    vector_flops=67e12,
    memory_bytes=80e9,
    memory_bandwidth=3.35e12,
    interconnect="nvlink4",
    interconnect_bandwidth=450e9,
    interconnect_latency_s=5e-6,
)
A100_LIKE = HardwareSpec(
    name="a100-like",
    peak_flops={"bf16": 312e12, "int8": 624e12},
    vector_flops=19.5e12,
    memory_bytes=80e9,
    memory_bandwidth=2.0e12,
    interconnect="nvlink3",
    interconnect_bandwidth=300e9,
    interconnect_latency_s=5e-6,
)
BF16 = PrecisionSpec("bf16", "bf16", "bf16", "bf16")
FP8 = PrecisionSpec("fp8", "fp8", "fp8", "bf16")
FP8_KV = PrecisionSpec("bf16-fp8kv", "bf16", "bf16", "fp8")
W4A16 = PrecisionSpec("w4a16", "int4", "bf16", "bf16", quantization_group_size=128)

def flat(hardware: HardwareSpec) -> FlatEfficiency:
    return FlatEfficiency(
        peak_flops=hardware.peak_flops,
        vector_flops=hardware.vector_flops,
        memory_bandwidth=hardware.memory_bandwidth,
        gemm_efficiency=0.7,
        attention_efficiency=0.6,
        memory_efficiency=0.8,
        elementwise_efficiency=0.5,
        allreduce_efficiency=0.7,
        interconnect_bandwidth=450e9,
        interconnect_latency_s=5e-6,
    )
OVERHEAD_S = 2e-3
BW = 3.35e12


def make(model=TINY, hardware=H100_LIKE, precision=BF16, tp=1) -> RooflineCostModel:
    return RooflineCostModel(model, hardware, precision, tp, flat(hardware), OVERHEAD_S)


def op(cost, name):
    return cost.ops[OP_CLASSES.index(name)]


def decode(num_seqs: int, context_per_seq: int) -> BatchSummary:
    return BatchSummary(
        num_decode_seqs=num_seqs,
        decode_context_tokens=num_seqs * context_per_seq,
    )


def prefill(q: int, p: int = 0) -> BatchSummary:
    """One chunk of q new tokens after p cached ones."""
    return BatchSummary(
        num_prefill_tokens=q,
        num_prefill_seqs=1,
        prefill_attn_pairs=q * p + q * (q + 1) / 2,
        prefill_kv_tokens=p + q,
    )


# --- each operator class against hand arithmetic (TINY, bf16, tp=1, M = 10 decodes) ---------

M = 10
CTX = 100  # per decode


def test_qkv_proj_flops_and_bytes():
    cost = make().step_cost(decode(M, CTX))
    n = (8 + 2 * 2) * 128  # q heads + k heads + v heads
    assert op(cost, "qkv_proj").flops == 2 * M * n * 1024
    assert op(cost, "qkv_proj").bytes == n * 1024 * 2 + M * 1024 * 2 + M * n * 2


def test_qkv_bias_adds_an_add_per_output_and_the_bias_read():
    model = replace(TINY, attention_bias=True)
    cost = make(model).step_cost(decode(M, CTX))
    n = 1536
    assert op(cost, "qkv_proj").flops == 2 * M * n * 1024 + M * n
    assert op(cost, "qkv_proj").bytes == n * 1024 * 2 + M * 1024 * 2 + M * n * 2 + n * 2


def test_o_proj_flops_and_bytes():
    cost = make().step_cost(decode(M, CTX))
    assert op(cost, "o_proj").flops == 2 * M * 1024 * (8 * 128)
    assert op(cost, "o_proj").bytes == 1024 * 1024 * 2 + M * 1024 * 2 + M * 1024 * 2


def test_dense_mlp_flops_and_bytes():
    cost = make().step_cost(decode(M, CTX))
    gate_up_flops = 2 * M * (2 * 4096) * 1024
    down_flops = 2 * M * 1024 * 4096
    gate_up_bytes = 8192 * 1024 * 2 + M * 1024 * 2 + M * 8192 * 2
    down_bytes = 1024 * 4096 * 2 + M * 4096 * 2 + M * 1024 * 2
    assert op(cost, "mlp").flops == gate_up_flops + down_flops
    assert op(cost, "mlp").bytes == gate_up_bytes + down_bytes


def test_attention_decode_flops_and_bytes():
    cost = make().step_cost(decode(M, CTX))
    kv_row_bytes = 2 * 2 * 128 * 2  # K and V, 2 KV heads, head_dim 128, bf16
    assert op(cost, "attention_decode").flops == 4 * 8 * 128 * (M * CTX + M)
    expected_bytes = M * CTX * kv_row_bytes + M * kv_row_bytes + M * 2 * 8 * 128 * 2
    assert op(cost, "attention_decode").bytes == expected_bytes
    assert op(cost, "attention_prefill") == ZERO_OP


def test_attention_prefill_flops_and_bytes_with_cached_prefix():
    q, p = 100, 50
    cost = make().step_cost(prefill(q, p))
    pairs = q * p + q * (q + 1) / 2
    kv_row_bytes = 2 * 2 * 128 * 2
    assert op(cost, "attention_prefill").flops == 4 * 8 * 128 * pairs
    q_o_bytes = q * 8 * 128 * 2 * 2
    kv_read, kv_written = (p + q) * kv_row_bytes, q * kv_row_bytes
    assert op(cost, "attention_prefill").bytes == q_o_bytes + kv_read + kv_written
    assert op(cost, "attention_decode") == ZERO_OP


def test_lm_head_runs_once_per_sequence_not_per_token():
    cost = make().step_cost(prefill(100))
    assert op(cost, "lm_head").flops == 2 * 1 * 32000 * 1024
    assert op(cost, "lm_head").bytes == 32000 * 1024 * 2 + 1 * 1024 * 2 + 1 * 32000 * 2


def test_elementwise_bytes_and_its_own_efficiency():
    cost = make().step_cost(decode(M, CTX))
    norms = 2 * 4 * M * 1024 * 2  # two add+RMSNorms: read x and residual, write both
    rope = 2 * M * (8 + 2) * 128 * 2 + M * 128 * 2  # q and k in place, cos/sin row
    silu = M * 3 * 4096 * 2  # read gate and up, write product
    per_step = (2 + 4) * M * 1024 * 2  # embedding read+write, final add+RMSNorm
    ew = op(cost, "elementwise")
    assert ew.bytes == norms + rope + silu + per_step
    assert ew.memory_s == pytest.approx(ew.bytes / (BW * 0.5))
    assert ew.bound == BOUND_MEMORY


def test_time_is_the_max_of_the_two_roofs_per_class():
    model = make()
    for batch in (decode(M, CTX), prefill(2048), prefill(512, 4096)):
        cost = model.step_cost(batch)
        for o in cost.ops:
            assert o.time_s == max(o.compute_s, o.memory_s) or o.bound in ("latency", "idle")
        for name in ("qkv_proj", "o_proj", "mlp", "lm_head"):
            o = op(cost, name)
            assert o.compute_s == pytest.approx(o.flops / (989e12 * 0.7))
            assert o.memory_s == pytest.approx(o.bytes / (BW * 0.8))
        for name in ("attention_prefill", "attention_decode"):
            o = op(cost, name)
            assert o.compute_s == pytest.approx(o.flops / (989e12 * 0.6))
            assert o.memory_s == pytest.approx(o.bytes / (BW * 0.8))
        assert cost.gpu_time_s == pytest.approx(sum(o.time_s for o in cost.ops))
        assert cost.time_s == pytest.approx(cost.gpu_time_s + OVERHEAD_S)


def test_layers_multiply_per_layer_work():
    two_layers = replace(TINY, num_hidden_layers=2)
    one, two = make().step_cost(decode(M, CTX)), make(two_layers).step_cost(decode(M, CTX))
    for name in ("qkv_proj", "attention_decode", "o_proj", "mlp"):
        assert op(two, name).flops == 2 * op(one, name).flops
        assert op(two, name).bytes == 2 * op(one, name).bytes
    assert op(two, "lm_head") == op(one, "lm_head")


# --- regimes ----------------------------------------------------------------------------------


def test_decode_is_memory_bound_and_large_prefill_compute_bound():
    model = make(LLAMA_8B)
    small = model.step_cost(decode(32, 2000))
    assert small.bound == BOUND_MEMORY
    assert op(small, "mlp").bound == BOUND_MEMORY
    assert op(small, "attention_decode").bound == BOUND_MEMORY
    large = model.step_cost(prefill(8192))
    assert large.bound == BOUND_COMPUTE
    assert op(large, "mlp").bound == BOUND_COMPUTE
    assert op(large, "attention_prefill").bound == BOUND_COMPUTE


def test_empty_batch_costs_only_the_overhead():
    cost = make().step_cost(BatchSummary())
    assert cost.gpu_time_s == 0.0
    assert cost.time_s == OVERHEAD_S
    assert all(o == ZERO_OP for o in cost.ops)


# --- tensor parallelism -----------------------------------------------------------------------


def test_tp2_halves_gemm_flops_and_adds_allreduce_time():
    batch = decode(M, CTX)
    tp1, tp2 = make().step_cost(batch), make(tp=2).step_cost(batch)
    for name in ("qkv_proj", "o_proj", "mlp", "lm_head", "attention_decode"):
        assert op(tp2, name).flops == op(tp1, name).flops / 2
    assert op(tp1, "allreduce") == ZERO_OP
    ar = op(tp2, "allreduce")
    message_bytes = M * 1024 * 2
    num_allreduces = 2 * 1 + 1  # after o_proj and the MLP of the one layer, and the embedding
    one_s = 5e-6 + 2 * (2 - 1) / 2 * message_bytes / (450e9 * 0.7)
    assert ar.time_s == pytest.approx(num_allreduces * one_s)
    assert ar.bytes == num_allreduces * message_bytes
    assert ar.bound == BOUND_LATENCY


def test_kv_heads_replicate_when_tp_exceeds_them():
    cost = make(tp=4).step_cost(decode(M, CTX))
    n = (8 // 4 + 2 * 1) * 128  # each GPU keeps one whole KV head
    assert op(cost, "qkv_proj").flops == 2 * M * n * 1024
    kv_bytes = (M * CTX + M) * 2 * 1 * 128 * 2  # K and V rows of the one local KV head
    q_o_bytes = M * 2 * (8 // 4) * 128 * 2
    assert op(cost, "attention_decode").bytes == kv_bytes + q_o_bytes


def test_unsplittable_tp_is_a_config_error():
    with pytest.raises(ConfigError):
        make(tp=3)


# --- MoE ----------------------------------------------------------------------------------------


def make_moe(tp: int = 1):
    """TINY_MOE as a run prices it: MoE layers go to the staged model (sim.cost.moe)."""
    return build_cost_model(TINY_MOE, H100_LIKE, BF16, tp, CostConfig())


def test_moe_reads_only_the_experts_hit():
    assert expected_active_experts(8, 2, 1) == pytest.approx(2.0)
    assert expected_active_experts(8, 2, 4096) == pytest.approx(8.0)
    model = make_moe()
    one, many = (op(model.step_cost(decode(m, 10)), "mlp").bytes for m in (1, 4096))
    # One token hits 2 of the 8 experts: its expert weights are a quarter of 4096 tokens'.
    expert_weights = (2 * 2048 * 1024 + 1024 * 2048) * 2
    assert one < 2.5 * expert_weights < 8 * expert_weights < many


def test_the_plain_model_refuses_moe_and_mla_models():
    with pytest.raises(ValueError, match="StagedCostModel"):
        make(TINY_MOE)


# --- precision ----------------------------------------------------------------------------------


def test_fp8_w8a8_halves_weight_bytes_and_uses_the_fp8_peak():
    cost = make(precision=FP8).step_cost(decode(M, CTX))
    n = 1536
    qkv = op(cost, "qkv_proj")
    assert qkv.bytes == n * 1024 * 1 + M * 1024 * 1 + M * n * 2  # fp8 weights and input
    assert qkv.compute_s == pytest.approx(qkv.flops / (1979e12 * 0.7))
    lm = op(cost, "lm_head")  # stays bf16
    assert lm.compute_s == pytest.approx(lm.flops / (989e12 * 0.7))


def test_fp8_without_fp8_tensor_cores_falls_back_to_bf16_weight_only():
    cost = make(hardware=A100_LIKE, precision=FP8).step_cost(decode(M, CTX))
    n = 1536
    qkv = op(cost, "qkv_proj")
    assert qkv.bytes == n * 1024 * 1 + M * 1024 * 2 + M * n * 2  # fp8 weights, bf16 input
    assert qkv.compute_s == pytest.approx(qkv.flops / (312e12 * 0.7))


def test_w4a16_weights_carry_group_scales():
    cost = make(precision=W4A16).step_cost(decode(M, CTX))
    o = op(cost, "o_proj")
    assert o.bytes == 1024 * 1024 * (0.5 + 2 / 128) + M * 1024 * 2 + M * 1024 * 2


def test_nvfp4_weights_carry_block_scales():
    b200_like = replace(H100_LIKE, peak_flops={"bf16": 2.25e15, "fp4": 9e15})
    fp4 = PrecisionSpec("fp4", "fp4", "fp4", "bf16", quantization_group_size=16)
    cost = make(hardware=b200_like, precision=fp4).step_cost(decode(M, CTX))
    o = op(cost, "o_proj")
    assert o.bytes == 1024 * 1024 * (0.5 + 1 / 16) + M * 1024 * 0.5 + M * 1024 * 2
    assert o.compute_s == pytest.approx(o.flops / (9e15 * 0.7))


def test_fp8_kv_cache_halves_kv_bytes_and_runs_attention_in_fp8():
    cost = make(precision=FP8_KV).step_cost(decode(M, CTX))
    att = op(cost, "attention_decode")
    assert att.bytes == (M * CTX + M) * 2 * 2 * 128 * 1 + M * 2 * 8 * 128 * 2
    assert att.compute_s == pytest.approx(att.flops / (1979e12 * 0.6))


# --- the config path and memoisation -----------------------------------------------------------


def test_build_cost_model_uses_the_config_and_records_provenance():
    model = build_cost_model(TINY, H100_LIKE, BF16, 1, CostConfig(step_overhead_ms=3.0))
    assert model.step_overhead_s == pytest.approx(3e-3)
    provenance = model.provenance()
    assert provenance.pop("cost_model") == FLAT_COST_SOURCE
    assert set(provenance.values()) == {FLAT_PROVENANCE}


def test_memoised_parts_give_identical_costs():
    batches = [decode(7, 300), prefill(64, 16), decode(7, 900)]
    for build in (lambda: make(TINY, tp=2), lambda: make_moe(tp=2)):
        model = build()
        first = [model.step_cost(b) for b in batches]
        assert [build().step_cost(b) for b in batches] == first
        assert [model.step_cost(b) for b in batches] == first


# --- monotonicity -------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    num_seqs=st.integers(1, 256),
    context=st.integers(0, 8000),
    extra=st.integers(0, 100_000),
    moe=st.booleans(),
    tp=st.sampled_from([1, 2, 4]),
)
def test_more_decode_context_never_makes_a_step_cheaper(num_seqs, context, extra, moe, tp):
    model = make_moe(tp) if moe else make(TINY, tp=tp)
    base = BatchSummary(num_decode_seqs=num_seqs, decode_context_tokens=num_seqs * context)
    more = BatchSummary(
        num_decode_seqs=num_seqs, decode_context_tokens=num_seqs * context + extra
    )
    assert model.step_cost(more).time_s >= model.step_cost(base).time_s


@settings(max_examples=200, deadline=None)
@given(
    q=st.integers(1, 8192),
    extra=st.integers(0, 8192),
    p=st.integers(0, 32000),
    moe=st.booleans(),
)
def test_a_longer_prefill_chunk_never_makes_a_step_cheaper(q, extra, p, moe):
    model = make_moe() if moe else make(TINY)
    assert model.step_cost(prefill(q + extra, p)).time_s >= model.step_cost(prefill(q, p)).time_s


def _time_step_cost(num_calls: int = 200_000) -> float:
    """Microseconds per step_cost call over a realistic mix of mostly-repeating batches."""
    import random
    import time

    rng = random.Random(0)
    model = build_cost_model(LLAMA_8B, H100_LIKE, BF16, 2, CostConfig())
    batches = []
    for _ in range(1000):
        num_decode = rng.randint(1, 256)
        chunk = rng.choice([0, 0, 0, rng.randint(1, 2048)])
        batches.append(
            BatchSummary(
                num_prefill_tokens=chunk,
                num_prefill_seqs=1 if chunk else 0,
                prefill_attn_pairs=chunk * (chunk + 1) / 2,
                prefill_kv_tokens=chunk,
                num_decode_seqs=num_decode,
                decode_context_tokens=num_decode * rng.randint(100, 4000),
            )
        )
    for b in batches:  # warm the memo, as a long run does
        model.step_cost(b)
    step_cost = model.step_cost
    start = time.perf_counter()
    for i in range(num_calls):
        step_cost(batches[i % 1000])
    return (time.perf_counter() - start) / num_calls * 1e6


if __name__ == "__main__":
    print(f"step_cost: {_time_step_cost():.2f} us/call (memo warm)")
