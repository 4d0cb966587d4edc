"""Multi-head latent attention (DeepSeek-V2/V3) on one GPU: projections, and attention as vLLM
0.24.0's MLA backends compute it (`vllm/v1/attention/backends/mla/common.py`). Decode on the
TRITON_MLA backend is timed on `MlaDecodeCurve`, fitted to a kernel of its design; the backend
vLLM picks on Hopper and Blackwell (sim.cost.mla_backend) is priced on the decode-attention
curve, capped at that one. DIVERGENCE: those backends were not measured (docs/DIVERGENCES.md).

Per layer, h = heads on this GPU (num_attention_heads / tp), L = kv_lora_rank, r =
qk_rope_head_dim, n = qk_nope_head_dim, v = v_head_dim (`deepseek_v2.py`
DeepseekV2MLAAttention):

- projections: fused q_a + kv_a (`fused_qkv_a_proj`, replicated on every TP rank:
  `disable_tp=True`), q_b (column-parallel, h (n + r) outputs), o_proj (row-parallel, h v
  inputs). kv_b_proj is not run on decode tokens: its two halves are absorbed.
- decode, absorbed: q_nope x W_UK per head (h bmm of n x L) takes the query into the latent
  space; attention of h query heads of width L + r over one shared latent K of L + r and V
  of L per cached token (MQA on the latent: each cached row read once for all heads); the
  output x W_UV per head (h bmm of L x v). W_UK and W_UV are kept in bf16
  (`process_weights_after_loading` dequantises kv_b_proj). FLOPs per (query, key) pair:
  2 h (L + r) + 2 h L.
- prefill (and the cached context of a chunked prefill), not absorbed (`forward_mha`):
  kv_b_proj up-projects the latents of the new and the context tokens to h (n + v), then
  attention with query/key width n + r and value width v: FLOPs per pair 2 h (n + r) + 2 h v.

The latent cache is one "head": under TP every GPU holds all of it (the KV cache does not
shrink with TP), which is what data-parallel attention avoids.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.cost.calibrated import smoothmax
from sim.cost.efficiency import KernelTime
from sim.cost.operators import ACT_BYTES, Gemm, TensorFormats, dense_gemm
from sim.model_spec import ModelSpec

ABSORBED_WEIGHT_BYTES = 2.0  # W_UK and W_UV in bf16


@dataclass(frozen=True, slots=True)
class MlaShapes:
    hidden: int
    heads: int  # on this GPU
    kv_lora_rank: int
    q_lora_rank: int
    nope: int
    rope: int
    v_dim: int

    @classmethod
    def from_model(cls, model: ModelSpec, tp: int) -> MlaShapes:
        return cls(
            hidden=model.hidden_size,
            heads=model.num_attention_heads // tp,
            kv_lora_rank=model.kv_lora_rank,
            q_lora_rank=model.q_lora_rank,
            nope=model.qk_nope_head_dim,
            rope=model.qk_rope_head_dim,
            v_dim=model.v_head_dim,
        )

    @property
    def latent(self) -> int:
        return self.kv_lora_rank + self.rope


def mla_qkv_proj(s: MlaShapes, f: TensorFormats, m: int) -> tuple[Gemm, ...]:
    """fused q_a/kv_a (replicated) and q_b (column-parallel); without q_lora_rank one q_proj."""
    wb, ib, dt, dq = f.weight_bytes, f.input_bytes, f.gemm_dtype, f.dequant_ops_per_weight
    q_out = s.heads * (s.nope + s.rope)
    if s.q_lora_rank:
        return (
            dense_gemm(m, s.q_lora_rank + s.latent, s.hidden, dt, wb, ib, dequant_ops_per_weight=dq),
            dense_gemm(m, q_out, s.q_lora_rank, dt, wb, ib, dequant_ops_per_weight=dq),
        )
    return (
        dense_gemm(m, s.latent, s.hidden, dt, wb, ib, dequant_ops_per_weight=dq),
        dense_gemm(m, q_out, s.hidden, dt, wb, ib, dequant_ops_per_weight=dq),
    )


def mla_o_proj(s: MlaShapes, f: TensorFormats, m: int) -> tuple[Gemm, ...]:
    return (
        dense_gemm(
            m, s.hidden, s.heads * s.v_dim, f.gemm_dtype, f.weight_bytes, f.input_bytes,
            dequant_ops_per_weight=f.dequant_ops_per_weight,
        ),
    )  # fmt: skip


def absorb_gemms(s: MlaShapes, num_decodes: int) -> tuple[Gemm, Gemm]:
    """q_nope x W_UK and o_latent x W_UV for the decode tokens: h small bf16 GEMMs each."""
    h, n, latent, v = s.heads, s.nope, s.kv_lora_rank, s.v_dim
    m = num_decodes
    w = ABSORBED_WEIGHT_BYTES
    uk = Gemm(m, latent, n, "bf16", flops=2.0 * h * m * n * latent,
              bytes=h * (n * latent * w + m * n * ACT_BYTES + m * latent * ACT_BYTES))  # fmt: skip
    uv = Gemm(m, v, latent, "bf16", flops=2.0 * h * m * latent * v,
              bytes=h * (latent * v * w + m * latent * ACT_BYTES + m * v * ACT_BYTES))  # fmt: skip
    return uk, uv


def kv_up_projection(s: MlaShapes, f: TensorFormats, num_rows: int) -> Gemm:
    """kv_b_proj on the latents a prefill attends to (its new and its cached tokens)."""
    return dense_gemm(
        num_rows, s.heads * (s.nope + s.v_dim), s.kv_lora_rank, f.gemm_dtype, f.weight_bytes,
        f.input_bytes, dequant_ops_per_weight=f.dequant_ops_per_weight,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class MlaAttentionCoefficients:
    """Per-layer attention kernel work, linear in the batch sums as AttentionCoefficients."""

    decode_flops_per_pair: float
    decode_q_o_bytes: float  # per decode query: latent query in, latent output out
    latent_bytes_per_token: float  # one cached latent row (all heads share it)
    prefill_flops_per_pair: float
    prefill_q_o_bytes: float
    prefill_kv_bytes_per_token: float  # expanded K and V written, then read by the kernel

    @classmethod
    def from_shapes(cls, s: MlaShapes, f: TensorFormats) -> MlaAttentionCoefficients:
        h, L, r, n, v = s.heads, s.kv_lora_rank, s.rope, s.nope, s.v_dim
        return cls(
            decode_flops_per_pair=2.0 * h * (L + r) + 2.0 * h * L,
            decode_q_o_bytes=h * ((L + r) + L) * ACT_BYTES,
            latent_bytes_per_token=(L + r) * f.kv_bytes,
            prefill_flops_per_pair=2.0 * h * (n + r) + 2.0 * h * v,
            prefill_q_o_bytes=h * ((n + r) + v) * ACT_BYTES,
            prefill_kv_bytes_per_token=2.0 * h * (n + r + v) * ACT_BYTES,
        )

    def decode(self, num_seqs: int, context_tokens: int) -> tuple[float, float]:
        rows = context_tokens + num_seqs
        flops = self.decode_flops_per_pair * rows
        nbytes = self.latent_bytes_per_token * rows + self.decode_q_o_bytes * num_seqs
        return flops, nbytes

    def prefill(self, num_tokens: int, attn_pairs: float, kv_tokens: int) -> tuple[float, float]:
        rows = kv_tokens + num_tokens
        nbytes = (
            self.prefill_q_o_bytes * num_tokens
            + (self.latent_bytes_per_token + self.prefill_kv_bytes_per_token) * rows
        )
        return self.prefill_flops_per_pair * attn_pairs, nbytes


NUM_KV_SPLITS = 4  # vLLM 0.24.0 TRITON_MLA (triton_mla.py: num_kv_splits = 4)


@dataclass(frozen=True, slots=True)
class MlaDecodeCurve:
    """Time of absorbed MLA decode attention, fitted to the Triton kernel of vLLM's TRITON_MLA
    design (calibration/mla_decode_kernel.py; sim.calibrate.moe_mla_fit):

        time = fixed + smoothmax_p(compute_s, memory_s)
        memory_s  = latent bytes / (bandwidth x memory_efficiency x u / (u + stream_half))
        compute_s = FLOPs / (peak x compute_efficiency)

    u = sequences x NUM_KV_SPLITS: the streams over the latent cache, each a program walking
    its split in 32-token tiles; few of them (a small batch) leave the bandwidth idle, and a
    split's walk sets the time. `fixed`: the split kernel's and the reduce's launches.
    compute_efficiency is far below the tensor peak: 16-head tiles, an online softmax in fp32.
    DIVERGENCE: priced from the batch's total context; a batch of mixed lengths waits for its
    longest sequences' splits (measured 14-58% slower than priced, calibration/check_moe_mla.py).
    """

    fixed_s: float
    compute_efficiency: float
    memory_efficiency: float
    stream_half: float
    ridge_p: float

    def time(self, flops: float, nbytes: float, num_seqs: int, peak: float, bandwidth: float) -> KernelTime:
        u = num_seqs * NUM_KV_SPLITS
        compute_s = flops / (peak * self.compute_efficiency)
        memory_s = nbytes / (bandwidth * self.memory_efficiency * u / (u + self.stream_half))
        return KernelTime(compute_s, memory_s, self.fixed_s + smoothmax(compute_s, memory_s, self.ridge_p))
