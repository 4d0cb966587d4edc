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

Peers: AIConfigurator prices MoE the same way (grouped GEMM on the local experts, rows from
top-k over EP, a workload-distribution factor for imbalance) and Vidur leaves MoE out.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    h, i = s.hidden, s.expert_width
    per_expert = max(1, round(rows / hit))
    wb, ib, dt = f.weight_bytes, f.input_bytes, f.gemm_dtype
    dq = f.dequant_ops_per_weight * -(-per_expert // DEQUANT_TILE_M) * hit
    w13 = Gemm(
        per_expert, 2 * i, h, dt,
        flops=2.0 * rows * 2 * i * h,
        bytes=hit * 2 * i * h * wb + rows * h * ib + rows * 2 * i * ACT_BYTES,
        dequant_ops=dq * 2 * i * h,
    )  # fmt: skip
    w2 = Gemm(
        per_expert, h, i, dt,
        flops=2.0 * rows * h * i,
        bytes=hit * h * i * wb + rows * i * ib + rows * h * ACT_BYTES,
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
