"""One MoE layer's expert GEMMs on one GPU, with and without expert parallelism.

Matched: vLLM 0.24.0 `vllm/model_executor/layers/fused_moe/` (FusedMoE, its
FusedMoEParallelConfig: without `--enable-expert-parallel` every expert is sharded over the
TP group; with it each of the ep = dp x tp GPUs holds num_experts / ep whole experts and
sees the tokens of every DP rank, gathered by the dispatch) and `deepseek_v2.py` (shared
experts: a plain MLP beside the routed ones, on the attention's TP group).

The grouped GEMM of the routed experts reads the weights of each expert that was hit and
runs `rows` token rows in all, `rows / experts hit` per expert (the m its tiles see):

- without EP: rows = m x top_k over the E experts, each expert's width / tp;
- with EP: the EP group routes T x top_k rows (T: tokens of all DP ranks) to E experts; this
  GPU holds E / ep of them and the busiest GPU, which every other waits for at the combine,
  gets `imbalance` times the mean T x top_k / ep rows. Hit experts among the local ones:
  E (1 - (1 - k/E)^T) x (1/ep) in expectation (uniform routing), at least one while rows > 0.

The kernel is vLLM's fused_moe (`fused_moe.py`): the rows sorted by expert, each expert's run
padded to BLOCK_SIZE_M, one Triton launch over the local experts for w13 and one for w2.
`fused_moe_launches` builds those launches (padding from the binomial spread of rows over the
experts, vLLM's block sizes) and `GroupedGemmCurve` times them, fitted to a kernel of that
design on H200 (sim.calibrate.moe_mla_fit); without a fitted curve each hit expert is priced
as a dense GEMM of rows / hit rows (`routed_experts`).

Peers: AIConfigurator prices MoE the same way (grouped GEMM on the local experts, rows from
top-k over EP, a workload-distribution factor for imbalance) and Vidur leaves MoE out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.cost.calibrated import smoothmax
from sim.cost.efficiency import KernelTime
from sim.cost.fused_moe_configs import fused_moe_blocks

from sim.cost.operators import (
    ACT_BYTES,
    DEQUANT_TILE_M,
    UNQUANTIZED_DTYPE,
    Gemm,
    TensorFormats,
    dense_gemm,
    expected_active_experts,
)
from sim.model_spec import ModelSpec
from sim.precision import DTYPE_BYTES


@dataclass(frozen=True, slots=True)
class MoeShapes:
    """One GPU's part of an MoE layer."""

    hidden: int
    num_experts: int  # in the whole model
    top_k: int
    expert_width: int  # intermediate of one expert on this GPU (width / tp without EP)
    local_experts: int  # experts whose weights this GPU holds
    ep: int
    imbalance: float  # busiest EP rank's rows over the mean (1 without EP)
    shared_width: int  # intermediate of the shared experts on this GPU (0: none)

    @classmethod
    def from_model(cls, model: ModelSpec, tp: int, ep: int, imbalance: float) -> MoeShapes:
        width = model.expert_intermediate_size
        shared = model.n_shared_experts * width
        return cls(
            hidden=model.hidden_size,
            num_experts=model.num_local_experts,
            top_k=model.num_experts_per_tok,
            expert_width=width if ep > 1 else width // tp,
            local_experts=model.num_local_experts // ep if ep > 1 else model.num_local_experts,
            ep=ep,
            imbalance=imbalance if ep > 1 else 1.0,
            shared_width=shared // tp,
        )

    def routed_rows(self, group_tokens: int, rank_tokens: int) -> tuple[float, float]:
        """(rows on this GPU, local experts hit) for a step of `group_tokens` over the EP group
        and `rank_tokens` on this GPU's DP rank."""
        if self.ep > 1:
            rows = group_tokens * self.top_k / self.ep * self.imbalance
            hit = expected_active_experts(self.num_experts, self.top_k, group_tokens) / self.ep
        else:
            rows = float(rank_tokens * self.top_k)
            hit = expected_active_experts(self.num_experts, self.top_k, rank_tokens)
        return rows, max(1.0, min(hit, float(self.local_experts))) if rows > 0 else 0.0


def routed_experts(s: MoeShapes, f: TensorFormats, group_tokens: int, rank_tokens: int) -> tuple[Gemm, ...]:
    """w13 (gate and up) and w2 (down) of the local experts that were hit."""
    rows, hit = s.routed_rows(group_tokens, rank_tokens)
    if rows <= 0:
        return ()
    return expert_gemms(rows, hit, s.hidden, s.expert_width, f.gemm_dtype, f.weight_bytes, f.input_bytes,
                        f.dequant_ops_per_weight)  # fmt: skip


def expert_gemms(
    rows: float, hit: float, hidden: int, width: int, dtype: str, weight_bytes: float,
    input_bytes: float, dequant_ops_per_weight: float = 0.0,
) -> tuple[Gemm, Gemm]:  # fmt: skip
    """w13 and w2 over `rows` token rows spread on `hit` experts: each hit expert's weights
    read once, the rows in and out (the fit of sim.calibrate.moe_mla_fit uses the same)."""
    h, i = hidden, width
    per_expert = max(1, round(rows / max(hit, 1e-9)))
    dq = dequant_ops_per_weight * -(-per_expert // DEQUANT_TILE_M) * hit
    w13 = Gemm(
        per_expert, 2 * i, h, dtype,
        flops=2.0 * rows * 2 * i * h,
        bytes=hit * 2 * i * h * weight_bytes + rows * h * input_bytes + rows * 2 * i * ACT_BYTES,
        dequant_ops=dq * 2 * i * h,
    )  # fmt: skip
    w2 = Gemm(
        per_expert, h, i, dtype,
        flops=2.0 * rows * h * i,
        bytes=hit * h * i * weight_bytes + rows * i * input_bytes + rows * h * ACT_BYTES,
        dequant_ops=dq * h * i,
    )  # fmt: skip
    return (w13, w2)


def router(s: MoeShapes, m: int) -> Gemm:
    """The gate on this DP rank's tokens, unquantised and replicated (ReplicatedLinear)."""
    dt = UNQUANTIZED_DTYPE
    return dense_gemm(m, s.num_experts, s.hidden, dt, DTYPE_BYTES[dt], ACT_BYTES)


def shared_experts(s: MoeShapes, f: TensorFormats, m: int) -> tuple[Gemm, ...]:
    """DeepSeek's shared experts: one gated MLP of n_shared x expert width on every token."""
    if not s.shared_width:
        return ()
    i, h, dq = s.shared_width, s.hidden, f.dequant_ops_per_weight
    wb, ib, dt = f.weight_bytes, f.input_bytes, f.gemm_dtype
    return (
        dense_gemm(m, 2 * i, h, dt, wb, ib, dequant_ops_per_weight=dq),
        dense_gemm(m, h, i, dt, wb, ib, dequant_ops_per_weight=dq),
    )


def moe_elementwise_rows(s: MoeShapes, group_tokens: int, rank_tokens: int) -> float:
    """Rows of SiLU-and-mul and of the top-k weighted sum on this GPU."""
    rows, _ = s.routed_rows(group_tokens, rank_tokens)
    return rows


# ---- the fused_moe kernel's blocks and its fitted curve ---------------------------------


def expected_blocks(mean_rows: float, trials: int, block_m: int) -> float:
    """E[ceil(X / block_m)] for X ~ Binomial(trials, mean_rows / trials): the m blocks of one
    expert once its rows are padded to the block (vLLM's moe_align_block_size)."""
    if mean_rows <= 0.0 or trials <= 0:
        return 0.0
    p = min(1.0, mean_rows / trials)
    if mean_rows < 30.0:  # exact tail sums: P(X > j B) for j = 0, 1, ...
        q = 1.0 - p
        pmf = q**trials if q > 0.0 else 0.0
        cdf, blocks, x = 0.0, 0.0, 0
        limit = min(trials, int(mean_rows + 12.0 * math.sqrt(mean_rows) + block_m + 12))
        while x <= limit:
            cdf += pmf
            if x % block_m == 0:  # x = j B: add P(X > j B)
                blocks += 1.0 - cdf
            if q <= 0.0:
                break
            pmf *= (trials - x) / (x + 1) * p / q
            x += 1
        return max(blocks, 0.0)
    sd = math.sqrt(mean_rows * (1.0 - p)) or 1.0  # normal approximation
    blocks, j = 0.0, 0
    while j * block_m <= mean_rows + 12.0 * sd:
        blocks += 0.5 * math.erfc((j * block_m + 0.5 - mean_rows) / (sd * math.sqrt(2.0)))
        j += 1
    return blocks


@dataclass(frozen=True, slots=True)
class GroupedGemm:
    """One fused_moe launch: its work (for the breakdown) and what its tiles see."""

    gemm: Gemm
    padded_rows: float  # rows after each expert's run is padded to BLOCK_SIZE_M
    inflight_bytes: float  # weight bytes one K step of every working CTA asks for
    tile_intensity: float  # BLOCK_M x BLOCK_N / (BLOCK_M + BLOCK_N): FLOPs per operand byte

    @classmethod
    def of(cls, g: Gemm, padded_rows: float, blocks: tuple[int, int, int], weight_bytes: float) -> GroupedGemm:
        bm, bn, bk = blocks
        programs = padded_rows / bm * -(-g.n // bn)
        return cls(g, padded_rows, programs * bn * bk * weight_bytes, bm * bn / (bm + bn))


def fused_moe_launches(
    s: MoeShapes, f: TensorFormats, group_tokens: int, rank_tokens: int, hardware: str
) -> tuple[GroupedGemm, ...]:
    """w13 and w2 as vLLM's fused_moe runs them: rows sorted by expert, each expert's run
    padded to BLOCK_SIZE_M, one launch over the local experts (mean rows per local expert:
    the same uniform routing, imbalance included, as `MoeShapes.routed_rows`); block sizes
    as vLLM picks them on `hardware` (sim.cost.fused_moe_configs). DIVERGENCE: with EP only
    this GPU's experts' rows get blocks; vLLM's expert map also gives other ranks' rows blocks
    that write zeros, whose cost was not measured."""
    gemms = routed_experts(s, f, group_tokens, rank_tokens)
    if not gemms:
        return ()
    tokens = group_tokens if s.ep > 1 else rank_tokens
    rows, _ = s.routed_rows(group_tokens, rank_tokens)
    blocks = fused_moe_blocks(hardware, tokens, s.local_experts, s.expert_width, f.gemm_dtype)
    per_expert = rows / s.local_experts
    trials = max(tokens, math.ceil(per_expert))
    padded = s.local_experts * blocks[0] * expected_blocks(per_expert, trials, blocks[0])
    return tuple(GroupedGemm.of(g, padded, blocks, f.weight_bytes) for g in gemms)


@dataclass(frozen=True, slots=True)
class GroupedGemmCurve:
    """Time of one fused_moe launch, fitted to the Triton kernel of its design
    (calibration/fused_moe_kernel.py; sim.calibrate.moe_mla_fit):

        time = fixed + smoothmax_p(compute_s, memory_s)
        compute_s = 2 padded_rows n k / (peak x compute_efficiency x I / (I + tile_half))
        memory_s  = bytes / (bandwidth x memory_efficiency x F / (F + inflight_half_bytes))

    - padding waste: the compute runs every row of each expert's padded run;
    - I, the tile's FLOPs per operand byte: small tiles (a 64 x 64 default) keep the tensor
      cores waiting on shared memory where a tuned 128 x 256 tile does not;
    - F, the weight bytes the working CTAs ask for per K step (Little's law: bandwidth is
      bytes in flight over latency): one token on few experts gives the GPU few CTAs with
      small tiles, and the weights stream far below the HBM rate;
    - bytes: the hit experts' weights, the rows in and out; `fixed`: the launch inside a CUDA
      graph and the empty programs of the worst-case grid.
    """

    fixed_s: float
    compute_efficiency: float
    memory_efficiency: float
    inflight_half_bytes: float
    ridge_p: float
    tile_half: float

    def time(self, launch: GroupedGemm, peak: float, bandwidth: float) -> KernelTime:
        g, i, f = launch.gemm, launch.tile_intensity, launch.inflight_bytes
        compute_s = 2.0 * launch.padded_rows * g.n * g.k / (peak * self.compute_efficiency * i / (i + self.tile_half))
        memory_s = g.bytes / (bandwidth * self.memory_efficiency * f / (f + self.inflight_half_bytes))
        return KernelTime(compute_s, memory_s, self.fixed_s + smoothmax(compute_s, memory_s, self.ridge_p))
