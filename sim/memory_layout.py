"""Per-GPU weights and KV bytes of one pipeline stage under TP, EP and DP attention, and for
MLA and DeepSeek's dense-then-MoE layers (the plain single-stage case is sim.memory's).

vLLM 0.24.0 layout (`deepseek_v2.py`, `qwen3_moe.py`, `llama.py`, fused_moe, `vllm/distributed/
utils.py` get_pp_indices):
- a stage holds its own layers; the first also the vocab-parallel embedding, the last the
  final norm and the LM head (`PPMissingLayer` elsewhere; a tied LM head is a copy there);
- attention and dense MLPs are split over the stage's TP group as in sim.memory; MLA keeps
  fused_qkv_a_proj replicated, splits q_b, kv_b and o_proj, and holds bf16 copies of the two
  absorbed halves of kv_b (W_UK, W_UV) for decode;
- routed experts: all of them sharded over TP, or with EP num_experts / ep whole experts;
  shared experts over TP; the router and norms replicated;
- KV cache: GQA as sim.memory; MLA caches kv_lora_rank + qk_rope_head_dim per token and
  layer on every GPU of the TP group (one latent "head", not split).

vLLM sizes one KV cache for all workers from the smallest memory left on any of them
(`vllm/v1/core/kv_cache_utils.py` get_kv_cache_configs), so the block count is the stage
with the fewest blocks.
"""

from __future__ import annotations

import math

from sim.model_spec import ModelSpec
from sim.parallel import ParallelSpec, pp_layer_counts
from sim.precision import DTYPE_BYTES, MODEL_DTYPE, PrecisionSpec

ABSORBED_BYTES = 2.0  # W_UK and W_UV kept in bf16


def stage_layer_kinds(model: ModelSpec, pp: int) -> list[tuple[int, int]]:
    """(dense layers, MoE layers) of each stage; DeepSeek's dense layers come first."""
    dense_first = model.num_dense_layers if model.is_moe else model.num_hidden_layers
    out, start = [], 0
    for count in pp_layer_counts(model.num_hidden_layers, pp):
        dense = max(0, min(start + count, dense_first) - start)
        out.append((dense, count - dense))
        start += count
    return out


def _attention_bytes(model: ModelSpec, precision: PrecisionSpec, tp: int) -> float:
    q = precision.weight_bytes_per_param
    u = DTYPE_BYTES[MODEL_DTYPE]
    heads = model.num_attention_heads // tp
    if model.is_mla:
        latent = model.kv_latent_dim
        if model.q_lora_rank:
            replicated = model.hidden_size * (model.q_lora_rank + latent)
            split = model.q_lora_rank * heads * model.qk_head_dim
            norms = model.q_lora_rank + model.kv_lora_rank
        else:
            replicated = model.hidden_size * latent
            split = model.hidden_size * heads * model.qk_head_dim
            norms = model.kv_lora_rank
        kv_b = model.kv_lora_rank * heads * (model.qk_nope_head_dim + model.v_head_dim)
        o = heads * model.v_head_dim * model.hidden_size
        return (replicated + split + kv_b + o) * q + norms * u + kv_b * ABSORBED_BYTES
    kv_heads = max(1, model.num_key_value_heads // tp)
    qkv_out = heads * model.head_dim + 2 * kv_heads * model.head_dim
    bias = qkv_out * u if model.attention_bias else 0.0
    norms = 2 * model.head_dim * u if model.qk_norm else 0.0
    return model.hidden_size * qkv_out * q + bias + norms + model.o_proj_params / tp * q


def _mlp_bytes(model: ModelSpec, precision: PrecisionSpec, parallel: ParallelSpec, moe: bool) -> float:
    q = precision.weight_bytes_per_param
    u = DTYPE_BYTES[MODEL_DTYPE]
    tp = parallel.tp
    if not moe:
        return model.dense_mlp_params / tp * q
    experts = model.num_local_experts
    routed = (experts // parallel.ep) * model.mlp_params_per_expert if parallel.ep > 1 else experts * model.mlp_params_per_expert / tp
    shared = model.shared_expert_params / tp
    return (routed + shared) * q + model.router_params_per_layer * u


def stage_weight_bytes(model: ModelSpec, precision: PrecisionSpec, parallel: ParallelSpec, stage: int) -> float:
    """One GPU's weights in stage `stage`."""
    u = DTYPE_BYTES[MODEL_DTYPE]
    dense, moe = stage_layer_kinds(model, parallel.pp)[stage]
    attention = _attention_bytes(model, precision, parallel.tp) + model.norm_params_per_layer * u
    total = dense * (attention + _mlp_bytes(model, precision, parallel, False))
    total += moe * (attention + _mlp_bytes(model, precision, parallel, True))
    vocab_shard = math.ceil(model.vocab_size / parallel.tp) * model.hidden_size * u
    if stage == 0:
        total += vocab_shard
    if stage == parallel.pp - 1:
        if parallel.pp > 1 or not model.tie_word_embeddings:  # a tied head is a copy on the last stage
            total += vocab_shard
        total += model.final_norm_params * u
    return total


def stage_kv_bytes_per_token(model: ModelSpec, precision: PrecisionSpec, parallel: ParallelSpec, stage: int) -> int:
    """K and V (MLA: the latent) of one token over this stage's layers, on one GPU."""
    layers = pp_layer_counts(model.num_hidden_layers, parallel.pp)[stage]
    if model.is_mla:
        elements = layers * model.kv_latent_dim
    else:
        elements = 2 * layers * max(1, model.num_key_value_heads // parallel.tp) * model.head_dim
    return int(elements * precision.kv_cache_bytes)
