"""Memory planning: weight shards, KV bytes per token, block counts and the refusals, with the
expected numbers worked out by hand from the architecture, not read back from the code."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.catalog import (
    hardware_spec_from_config,
    load_catalog_entry,
    model_spec_from_config,
    precision_spec_from_config,
)
from sim.errors import ConfigError, DoesNotFitError
from sim.memory import MemoryPlan, kv_bytes_per_token, plan_memory, weight_bytes_per_gpu

GIB = 2**30
H100_USABLE_BYTES = 79.18 * GIB * 0.9  # CUDA's capacity x gpu_memory_utilization
NON_TORCH = 174_063_616  # kernel workspaces, measured on one H200 (calibration/data/h200_memory.json)
DEFAULTS = dict(block_size=16, gpu_memory_utilization=0.9, max_num_batched_tokens=8192, max_num_seqs=256)


def model(name):
    return model_spec_from_config(load_catalog_entry("model", name))


def hardware(name):
    return hardware_spec_from_config(load_catalog_entry("hardware", name))


def precision(name, on="h100_sxm"):
    return precision_spec_from_config(load_catalog_entry("precision", name), hardware(on))


def plan(model_name, hw="h100_sxm", prec="bf16", tp=1, max_model_len=None, **overrides) -> MemoryPlan:
    knobs = {**DEFAULTS, **overrides}
    return plan_memory(
        model(model_name), hardware(hw), precision(prec, hw), tp, max_model_len=max_model_len, **knobs
    )


# ---- Llama-3.1-8B on one H100 ------------------------------------------------------------------


def test_llama_8b_bf16_weights_are_two_bytes_per_parameter():
    weights = plan("llama3_8b").weight_bytes
    assert weights == 2 * 8_030_261_248
    assert weights / 1e9 == pytest.approx(16.06, abs=0.005)


def test_llama_8b_kv_bytes_per_token():
    assert plan("llama3_8b").kv_bytes_per_token == 2 * 32 * 8 * 128 * 2 == 131072
    assert plan("llama3_8b", prec="bf16_kv8").kv_bytes_per_token == 131072 // 2
    assert plan("llama3_8b", prec="fp8_kv").kv_bytes_per_token == 131072 // 2


def test_llama_8b_block_count_by_hand():
    activations = 8192 * (2 * 4096 + 3 * 14336) * 2 + 256 * 128256 * 4
    runtime = NON_TORCH  # no NCCL at TP=1; the context and CUDA graphs sit in the headroom
    budget = H100_USABLE_BYTES - 2 * 8_030_261_248 - activations - runtime
    expected_blocks = math.floor(budget / (16 * 131072))
    result = plan("llama3_8b")
    assert result.activation_reserve_bytes == activations
    assert result.runtime_reserve_bytes == runtime
    assert result.num_gpu_blocks == expected_blocks
    assert result.max_num_cached_tokens == 16 * expected_blocks
    assert result.max_num_full_length_seqs == expected_blocks // (131072 // 16)


def test_describe_reports_gigabytes():
    report = plan("llama3_8b").describe()
    assert report["weights_gb"] == pytest.approx(16.06, abs=0.005)
    assert report["usable_gb"] == pytest.approx(H100_USABLE_BYTES / 1e9)
    assert report["kv_bytes_per_token"] == 131072 and report["block_size"] == 16
    assert report["kv_cache_gb"] < report["usable_gb"] - report["weights_gb"]


def test_narrower_formats_shrink_the_weights():
    formats = ("bf16", "fp8", "int8", "int4")
    sizes = {name: plan("llama3_8b", prec=name).weight_bytes for name in formats}
    assert sizes["int4"] < sizes["fp8"] < sizes["int8"] < sizes["bf16"]
    # fp8 quantises only the projections; embeddings, LM head and the 65 norms stay bf16
    unquantised = 2 * 128256 * 4096 + 65 * 4096
    projections = 8_030_261_248 - unquantised
    assert sizes["fp8"] == projections * 1 + unquantised * 2


# ---- tensor parallelism ------------------------------------------------------------------------


def test_llama_70b_tp4_shards_by_hand():
    result = plan("llama3_70b", tp=4)
    assert result.kv_bytes_per_token == 2 * 80 * 2 * 128 * 2 == 81920
    qkv = 8192 * (64 * 128 // 4 + 2 * 2 * 128)  # 16 query heads and 2 KV heads per GPU
    o_proj = 8192 * 8192 // 4
    mlp = 3 * 8192 * 28672 // 4
    per_layer = qkv + o_proj + mlp + 2 * 8192  # norms replicated
    params = 80 * per_layer + 2 * (128256 // 4) * 8192 + 8192  # vocab-parallel embed + LM head
    assert result.weight_bytes == 2 * params
    assert result.runtime_reserve_bytes == NON_TORCH + 0.41 * GIB  # NCCL buffers with TP > 1


def test_kv_heads_are_replicated_when_tp_exceeds_them():
    llama = model("llama3_70b")
    bf16 = precision("bf16")
    assert kv_bytes_per_token(llama, bf16, 8) == 2 * 80 * 1 * 128 * 2
    mqa = dataclasses.replace(llama, num_key_value_heads=2)
    assert kv_bytes_per_token(mqa, bf16, 8) == kv_bytes_per_token(mqa, bf16, 2)  # one head each
    # each GPU also holds one full KV head of the k/v projections, not 2/8 of one
    shard = weight_bytes_per_gpu(mqa, bf16, 8)
    naive = weight_bytes_per_gpu(dataclasses.replace(mqa, num_key_value_heads=8), bf16, 8)
    assert shard == naive  # 2 KV heads replicated 4x hold as much as 8 heads split 8 ways


def test_mixtral_splits_every_expert_over_tp():
    one, two = plan("mixtral_8x7b", hw="h200", tp=1), plan("mixtral_8x7b", hw="h200", tp=2)
    router_and_norms = 32 * (4096 * 8 + 2 * 4096) + 4096
    assert one.weight_bytes == 2 * 46_702_792_704
    assert two.weight_bytes == pytest.approx((one.weight_bytes + 2 * router_and_norms) / 2)


# ---- refusals ----------------------------------------------------------------------------------


def test_405b_in_bf16_on_one_h100_is_refused_with_numbers_and_a_way_out():
    weights = 2 * 405_853_388_800
    activations = 8192 * (2 * 16384 + 3 * 53248) * 2 + 256 * 128256 * 4
    needed = weights + activations + NON_TORCH
    with pytest.raises(DoesNotFitError) as err:
        plan("llama3_405b")
    message = str(err.value)
    assert f"needs {needed / 1e9:.1f} GB" in message  # 815.2 GB
    assert f"has {H100_USABLE_BYTES / 1e9:.1f} GB" in message  # 76.5 GB
    assert "No TP up to 8 fits in bf16" in message
    assert "fp8 at TP=8" in message  # 405.9 GB of fp8 weights over 8 GPUs


def test_405b_fits_where_the_advice_says():
    result = plan("llama3_405b", prec="fp8", tp=8)
    assert result.num_gpu_blocks >= result.blocks_per_full_seq


def test_fp8_on_an_a100_is_refused():
    with pytest.raises(ConfigError, match="a100|A100"):
        plan("llama3_8b", hw="a100_80gb", prec="fp8")


def test_a_cache_too_small_for_one_sequence_says_how_many_tokens_it_holds():
    with pytest.raises(DoesNotFitError) as err:
        plan("llama3_8b", hw="l40s", gpu_memory_utilization=0.5)
    message = str(err.value)
    held = int(message.split("cache holds ")[1].split(" tokens")[0])
    assert held < 131072 and "max_model_len" in message and "gpu_memory_utilization" in message
    assert "Smallest TP that fits in bf16: 2" in message
    smaller = plan("llama3_8b", hw="l40s", gpu_memory_utilization=0.5, max_model_len=held)
    assert smaller.max_num_full_length_seqs == 1


@pytest.mark.parametrize(
    ("tp", "hw", "match"),
    [
        (3, "h100_sxm", "valid TP sizes: 1, 2, 4, 8"),
        (16, "l40s", "has 8 GPUs"),  # no NICs in its config: one node only
        (12, "h100_sxm", "multiple of that"),
        (0, "h100_sxm", "valid TP sizes"),
    ],
)
def test_tp_must_split_the_heads_within_one_node(tp, hw, match):
    with pytest.raises(ConfigError, match=match):
        plan("llama3_8b", hw=hw, tp=tp)


def test_tp_across_two_nodes_halves_the_weights_of_tp8():
    tp8, tp16 = plan("llama3_8b", tp=8), plan("llama3_8b", tp=16)
    assert tp16.weight_bytes < 0.55 * tp8.weight_bytes


@pytest.mark.parametrize(
    ("knob", "value", "match"),
    [
        ("gpu_memory_utilization", 0.0, "in \\(0, 1\\]"),
        ("gpu_memory_utilization", 1.2, "in \\(0, 1\\]"),
        ("block_size", 12, "power of two"),
        ("max_num_seqs", 0, "max_num_seqs"),
        ("max_model_len", 200_000, "max_position_embeddings"),
        ("num_gpu_blocks_override", 0, "num_gpu_blocks_override"),
    ],
)
def test_bad_settings_are_named(knob, value, match):
    with pytest.raises(ConfigError, match=match):
        plan("llama3_8b", **{knob: value})


def test_the_whole_gpu_may_be_used():
    assert plan("llama3_8b", gpu_memory_utilization=1.0).num_gpu_blocks > plan("llama3_8b").num_gpu_blocks


def test_the_block_override_replaces_the_count():
    result = plan("llama3_8b", num_gpu_blocks_override=100, max_model_len=1600)
    assert result.num_gpu_blocks == 100 and result.max_num_cached_tokens == 1600
    with pytest.raises(DoesNotFitError, match="1600 tokens"):
        plan("llama3_8b", num_gpu_blocks_override=100, max_model_len=1601)


def test_an_override_may_use_the_memory_beyond_gpu_memory_utilization():
    # vLLM allocates the blocks it is told to: the 10% left by gpu_memory_utilization=0.9 can
    # hold them, and the plan says the count was given.
    computed = plan("llama3_8b")
    room = computed.kv_room_bytes
    assert room == pytest.approx(computed.kv_budget_bytes + 0.1 * computed.memory_bytes)
    most = math.floor(room / computed.block_bytes)
    assert most > computed.num_gpu_blocks
    given = plan("llama3_8b", num_gpu_blocks_override=most)
    assert given.num_gpu_blocks == most and given.blocks_given


def test_an_override_beyond_the_gpu_is_refused_with_the_count_that_fits():
    # 70B in fp8 on one H100 (80 GB): about 71 GB of weights leave room for a few hundred blocks
    # of 80 layers x 8 KV heads x 128 x 2 (K, V) x 2 bytes x 16 tokens = 5 MiB each.
    computed = plan("llama3_70b", prec="fp8", max_model_len=1024)
    assert computed.block_bytes == 80 * 8 * 128 * 2 * 2 * 16
    most = math.floor(computed.kv_room_bytes / computed.block_bytes)
    assert plan("llama3_70b", prec="fp8", max_model_len=1024, num_gpu_blocks_override=most).num_gpu_blocks == most
    with pytest.raises(DoesNotFitError, match=f"num_gpu_blocks_override={most + 1:,} asks for .* At most {most:,} blocks fit"):
        plan("llama3_70b", prec="fp8", max_model_len=1024, num_gpu_blocks_override=most + 1)


LLAMA_8B_ON_H100 = (model("llama3_8b"), hardware("h100_sxm"), precision("bf16"))


@settings(max_examples=25, deadline=None)
@given(
    block_size=st.sampled_from([1, 8, 16, 32, 64, 128]),
    utilization=st.floats(min_value=0.5, max_value=1.0),
)
def test_blocks_use_the_budget_to_within_one_block(block_size, utilization):
    knobs = {**DEFAULTS, "block_size": block_size, "gpu_memory_utilization": utilization}
    result = plan_memory(*LLAMA_8B_ON_H100, 1, max_model_len=8192, **knobs)
    leftover = result.kv_budget_bytes - result.kv_cache_bytes
    assert 0 <= leftover < result.block_bytes


def test_kv_blocks_match_what_vllm_allocated_on_the_h200():
    # vLLM 0.24.0 on one H200, Llama-3.1-8B bf16, gpu_memory_utilization 0.9, max_model_len
    # 8192, its default batch limits (1024 sequences, 8192 tokens): 56,057 blocks in one engine
    # start and 56,174 in another (../shared/vllm meta.json files; the engine log says
    # "Available KV cache memory: 109.49 GiB"). The plan sizes from the 139.8 GiB CUDA reports.
    blocks = plan(
        "llama3_8b", hw="h200", max_model_len=8192, max_num_seqs=1024, max_num_batched_tokens=8192
    ).num_gpu_blocks
    for measured in (56_057, 56_174):
        assert abs(blocks - measured) / measured < 0.01, (blocks, measured)
