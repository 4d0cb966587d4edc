"""FLOPs and HBM bytes of each operator of a Llama-style decoder, on one GPU of the TP group.

One record per operator (FLOPs, bytes read + written), the accounting idea of LLM-Viewer's
`model_analyzer.py` (load_weight / load_act / store_act / load_kv_cache per layer) and of
llm-analysis, rewritten here for vLLM's tensor-parallel layout (vLLM main at 00024d31,
`vllm/model_executor/models/llama.py`, `mixtral.py`, `layers/linear.py`):

    embed -> [ add+RMSNorm -> qkv_proj -> RoPE -> attention -> o_proj -> all-reduce
               add+RMSNorm -> gate_up -> SiLU*mul -> down -> all-reduce ] x L
          -> add+RMSNorm -> lm_head (last position of each sequence only)

Column-parallel layers (qkv, gate_up, lm_head) split their output dim over TP, row-parallel
layers (o_proj, down) their input dim; activations between them are replicated, so norms and
residual adds see the full hidden size on every GPU.

Byte conventions (the same throughout):
- weights at `TensorFormats.weight_bytes` (storage format, plus one bf16 scale per group for
  weight-only formats and one fp8 scale per NVFP4 block; per-channel scales of W8A8 are a
  rounding error and left out);
- GEMM inputs at the GEMM's compute dtype (1 byte for fp8/int8 W8A8, 2 for bf16);
- GEMM outputs and every element-wise tensor in bf16: vLLM's fp8 GEMMs write bf16.
  DIVERGENCE: the kernels quantising activations to fp8 are not counted (vLLM's compile passes
  fuse most of them into the preceding RMSNorm or SiLU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.errors import ConfigError
from sim.hardware_spec import HardwareSpec
from sim.model_spec import ModelSpec
from sim.precision import DTYPE_BYTES, PrecisionSpec

ACT_BYTES = 2.0  # bf16: GEMM outputs, norms, residual stream, Q and O of attention
SCALE_BYTES = 2.0  # one bf16/fp16 scale per quantisation group (GPTQ, AWQ)
FP4_BLOCK_SCALE_BYTES = 1.0  # one fp8 (e4m3) scale per block of NVFP4 weights
UNQUANTIZED_DTYPE = "bf16"  # lm_head and the MoE router stay unquantised in vLLM checkpoints

# Weight-only formats (W8A16, W4A16 through Marlin-style kernels) widen each weight to bf16 in
# registers: unpack (shift, mask), convert, and apply the group scale, about 4 CUDA-core
# operations per weight, once for every tile of DEQUANT_TILE_M rows that reuses it. This is
# an assumption, not a measurement: it makes large-batch W4A16 slower than bf16, as reported
# for these kernels, while small batches stay bandwidth-bound.
DEQUANT_OPS_PER_WEIGHT = 4.0
DEQUANT_TILE_M = 64

# Element-wise FLOPs per output element; small next to the bytes, kept for the vector roof.
ADD_RMSNORM_FLOPS = 5.0  # residual add, square, accumulate, scale by rsqrt, scale by weight
ROPE_FLOPS = 3.0  # x1*cos - x2*sin
SILU_MUL_FLOPS = 5.0  # negate, exp, add, divide, multiply by the up projection


@dataclass(frozen=True, slots=True)
class TensorFormats:
    """Bytes per element of each operand and the dtypes the matrix units run in, resolved
    against what the hardware supports."""

    gemm_dtype: str  # tensor-core rate of the quantised GEMMs
    weight_bytes: float  # per weight of the quantised layers, group scales included
    input_bytes: float  # per element of a GEMM input activation
    kv_bytes: float  # per element of the KV cache
    attention_dtype: str  # tensor-core rate of QK^T and PV
    dequant_ops_per_weight: float = 0.0  # CUDA-core work to widen a narrow weight per M tile

    @classmethod
    def resolve(cls, precision: PrecisionSpec, hardware: HardwareSpec) -> TensorFormats:
        """A GEMM dtype the hardware lacks (fp8 on Ampere) falls back to bf16 with the weights
        dequantised on the fly, as vLLM does with its Marlin kernels (per-channel scales, not
        counted). Scales are counted as the memory planner counts them. Attention is "fp8"
        when the KV cache is fp8 and the hardware has fp8 tensor cores; a calibrated model then
        prices it on the measured FP8-KV curves (sim.cost.calibrated), the flat one at the fp8
        tensor rate (vLLM's FlashAttention-3 path quantises the query to the cache dtype)."""
        gemm_dtype = precision.activation_dtype
        if gemm_dtype not in ("bf16", "fp16") and not hardware.supports(gemm_dtype):
            gemm_dtype = "bf16"
        weight_bytes = precision.weight_bytes
        group = precision.quantization_group_size
        if precision.is_weight_only:  # GPTQ/AWQ: one 16-bit scale per group of weights
            weight_bytes += SCALE_BYTES / group
        elif precision.weight_dtype == "fp4":  # NVFP4: one fp8 scale per block
            weight_bytes += FP4_BLOCK_SCALE_BYTES / group
        kv_fp8 = precision.kv_cache_dtype == "fp8" and hardware.supports("fp8")
        return cls(
            gemm_dtype=gemm_dtype,
            weight_bytes=weight_bytes,
            input_bytes=DTYPE_BYTES[gemm_dtype],
            kv_bytes=precision.kv_cache_bytes,
            attention_dtype="fp8" if kv_fp8 else "bf16",
            dequant_ops_per_weight=DEQUANT_OPS_PER_WEIGHT if precision.is_weight_only else 0.0,
        )


@dataclass(frozen=True, slots=True)
class LayerShapes:
    """The per-GPU dimensions of one decoder layer under tensor parallelism `tp`."""

    hidden: int
    heads: int  # query heads on this GPU
    kv_heads: int  # KV heads on this GPU (replicated when tp > num_key_value_heads)
    head_dim: int
    intermediate: int  # MLP (per-expert for MoE) intermediate size on this GPU
    vocab: int  # vocabulary rows of the vocab-parallel lm_head on this GPU
    num_experts: int  # 0 for a dense model
    top_k: int
    attention_bias: bool

    @classmethod
    def from_model(cls, model: ModelSpec, tp: int) -> LayerShapes:
        """Split as vLLM does, refusing the splits its loaders refuse."""
        if tp < 1:
            raise ConfigError(f"parallel.tp must be >= 1, got {tp}")
        if model.num_attention_heads % tp:
            raise ConfigError(
                f"{model.name}: {model.num_attention_heads} attention heads"
                f" do not split over tp={tp}"
            )
        kv = model.num_key_value_heads
        if kv % tp and tp % kv:
            raise ConfigError(f"{model.name}: {kv} KV heads do not split over tp={tp}")
        width = model.expert_intermediate_size if model.is_moe else model.intermediate_size
        if width % tp:
            name = "moe_intermediate_size" if model.moe_intermediate_size else "intermediate_size"
            raise ConfigError(f"{model.name}: {name} {width} does not split over tp={tp}")
        return cls(
            hidden=model.hidden_size,
            heads=model.num_attention_heads // tp,
            kv_heads=max(1, kv // tp),
            head_dim=model.head_dim,
            intermediate=width // tp,
            vocab=math.ceil(model.vocab_size / tp),  # vLLM pads the vocabulary to split it
            num_experts=model.num_local_experts,
            top_k=model.num_experts_per_tok,
            attention_bias=model.attention_bias,
        )

    @property
    def qkv_out(self) -> int:
        return (self.heads + 2 * self.kv_heads) * self.head_dim


@dataclass(frozen=True, slots=True)
class Gemm:
    """One GEMM kind: the (m, n, k) an efficiency curve is looked up at, and its totals
    (several matrices for grouped expert GEMMs)."""

    m: int
    n: int
    k: int
    dtype: str
    flops: float
    bytes: float
    dequant_ops: float = 0.0  # CUDA-core operations widening quantised weights


@dataclass(frozen=True, slots=True)
class Work:
    """FLOPs and bytes of a group of element-wise kernels."""

    flops: float
    bytes: float


def dense_gemm(
    m: int,
    n: int,
    k: int,
    dtype: str,
    weight_bytes: float,
    input_bytes: float,
    bias: bool = False,
    dequant_ops_per_weight: float = 0.0,
) -> Gemm:
    """y[m, n] = x[m, k] @ W[k, n] (+ b): weights and input read once, output written once."""
    flops = 2.0 * m * n * k
    nbytes = n * k * weight_bytes + m * k * input_bytes + m * n * ACT_BYTES
    if bias:
        flops += m * n
        nbytes += n * ACT_BYTES
    dequant = n * k * dequant_ops_per_weight * -(-m // DEQUANT_TILE_M)
    return Gemm(m, n, k, dtype, flops, nbytes, dequant)


def qkv_proj(s: LayerShapes, f: TensorFormats, m: int) -> tuple[Gemm, ...]:
    bias = s.attention_bias
    return (
        dense_gemm(
            m, s.qkv_out, s.hidden, f.gemm_dtype, f.weight_bytes, f.input_bytes, bias,
            f.dequant_ops_per_weight,
        ),
    )  # fmt: skip


def o_proj(s: LayerShapes, f: TensorFormats, m: int) -> tuple[Gemm, ...]:
    k = s.heads * s.head_dim
    return (
        dense_gemm(
            m, s.hidden, k, f.gemm_dtype, f.weight_bytes, f.input_bytes,
            dequant_ops_per_weight=f.dequant_ops_per_weight,
        ),
    )  # fmt: skip


def mlp(s: LayerShapes, f: TensorFormats, m: int) -> tuple[Gemm, ...]:
    """Gated MLP: gate and up fused into one column-parallel GEMM, then the down projection.
    An MoE layer's experts are priced by `sim.cost.moe` (vLLM's fused_moe, measured), in the
    staged model."""
    if s.num_experts:
        raise ValueError("MoE layers are priced by sim.cost.moe (StagedCostModel), not as a dense MLP")
    i = s.intermediate
    dq = f.dequant_ops_per_weight
    return (
        dense_gemm(m, 2 * i, s.hidden, f.gemm_dtype, f.weight_bytes, f.input_bytes, dequant_ops_per_weight=dq),
        dense_gemm(m, s.hidden, i, f.gemm_dtype, f.weight_bytes, f.input_bytes, dequant_ops_per_weight=dq),
    )


def expected_active_experts(num_experts: int, top_k: int, num_tokens: int) -> float:
    """Experts hit at least once when each token picks `top_k` distinct experts uniformly.

    One token misses a given expert with probability 1 - k/E; tokens route independently, so
    E (1 - (1 - k/E)^M) experts are expected to be hit. Real routers are skewed, which hits
    fewer: a calibration target.
    """
    if num_tokens <= 0 or num_experts <= 0:
        return 0.0
    return num_experts * (1.0 - (1.0 - top_k / num_experts) ** num_tokens)


def lm_head(s: LayerShapes, num_seqs: int) -> tuple[Gemm, ...]:
    """Logits of the last position of each sequence, this GPU's vocabulary shard, bf16 out.

    DIVERGENCE: the all-gather of the logit shards and the sampler's fp32 upcast are not
    priced (the sampler sits in the per-step CPU overhead).
    """
    dt = UNQUANTIZED_DTYPE
    return (dense_gemm(num_seqs, s.vocab, s.hidden, dt, DTYPE_BYTES[dt], ACT_BYTES),)


def layer_elementwise(s: LayerShapes, m: int) -> Work:
    """Two fused add+RMSNorms, RoPE on q and k, SiLU-and-mul (and the MoE top-k sum).

    vLLM fuses each residual add into the next RMSNorm (`fused_add_rms_norm`): it reads the
    hidden state and the residual and writes both back, 4 tensors of m x hidden.
    """
    mh = m * s.hidden
    flops = 2 * ADD_RMSNORM_FLOPS * mh
    nbytes = 2 * 4 * mh * ACT_BYTES
    rope_elems = m * (s.heads + s.kv_heads) * s.head_dim
    flops += ROPE_FLOPS * rope_elems
    nbytes += (2 * rope_elems + m * s.head_dim) * ACT_BYTES  # q, k in place; cos/sin row per token
    rows = m * s.top_k if s.num_experts else m
    flops += SILU_MUL_FLOPS * rows * s.intermediate
    nbytes += rows * 3 * s.intermediate * ACT_BYTES  # read gate and up, write their product
    if s.num_experts:  # weighted sum of each token's top_k expert outputs
        flops += 2.0 * rows * s.hidden
        nbytes += (rows + m) * s.hidden * ACT_BYTES
    return Work(flops, nbytes)


def step_elementwise(s: LayerShapes, m: int) -> Work:
    """Once per step: the embedding gather (read a row, write it) and the final add+RMSNorm."""
    mh = m * s.hidden
    return Work(flops=ADD_RMSNORM_FLOPS * mh, bytes=(2 + 4) * mh * ACT_BYTES)


@dataclass(frozen=True, slots=True)
class AttentionCoefficients:
    """Per-layer attention work as linear coefficients of the batch sums, so the per-step
    price is a few multiplications.

    QK^T and PV each cost 2 FLOPs per multiply-add over head_dim, per query head and per
    (query, key) pair: 4 * heads * head_dim per pair. Each K and V row is read once per step
    (FlashAttention re-reads K/V once per query tile: left to calibration).
    """

    flops_per_pair: float
    q_o_bytes_per_token: float  # read Q, write O, bf16
    kv_bytes_per_token: float  # one K row and one V row of this GPU's KV heads

    @classmethod
    def from_shapes(cls, s: LayerShapes, f: TensorFormats) -> AttentionCoefficients:
        return cls(
            flops_per_pair=4.0 * s.heads * s.head_dim,
            q_o_bytes_per_token=2.0 * s.heads * s.head_dim * ACT_BYTES,
            kv_bytes_per_token=2.0 * s.kv_heads * s.head_dim * f.kv_bytes,
        )

    def prefill(self, num_tokens: int, attn_pairs: float, kv_tokens: int) -> tuple[float, float]:
        """(FLOPs, bytes): Q/O of the chunk, `kv_tokens` K/V rows read, the new rows written."""
        nbytes = (
            self.q_o_bytes_per_token * num_tokens
            + self.kv_bytes_per_token * (kv_tokens + num_tokens)
        )
        return self.flops_per_pair * attn_pairs, nbytes

    def decode(self, num_seqs: int, context_tokens: int) -> tuple[float, float]:
        """(FLOPs, bytes): each query sees its context plus itself; the context K/V is read,
        the new token's K/V written, one Q read and one O written per sequence."""
        flops = self.flops_per_pair * (context_tokens + num_seqs)
        nbytes = (
            self.kv_bytes_per_token * (context_tokens + num_seqs)
            + self.q_o_bytes_per_token * num_seqs
        )
        return flops, nbytes
