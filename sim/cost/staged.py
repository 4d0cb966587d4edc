"""The price of one engine step across pipeline stages, data-parallel attention ranks and an
expert-parallel group; MLA attention and DeepSeek's dense-then-MoE layers.

One step (a batch of T tokens of the whole engine) on the layout of `sim.parallel`:

    stage 0:   embedding -> layers [0, n0) -> send to stage 1
    stage i:   layers [..)                 -> send to stage i + 1
    stage pp-1: layers [..) -> final norm -> LM head

Each layer on one GPU: attention on its DP rank's share of the batch (T / dp tokens, heads
/ tp), then its MLP: a dense one (split over tp, all-reduced), or an MoE layer (router and
shared experts on the rank's tokens; the routed experts with EP on the whole EP group's
tokens after the dispatch, then the combine; without EP sharded over tp and all-reduced).

DIVERGENCE: DP ranks are taken to split every batch evenly (vLLM runs one scheduler per DP
rank and pads each forward to the largest rank's token count); the step lasts as long as
the busiest GPU, which ceil(T / dp) and the EP load-imbalance factor stand for.

A `StepCost` reports one GPU's mean work (over the stages: the pipeline's sum / pp), so MFU
and the busy fraction stay per GPU; `stage_times_s` carries each stage's time, its send to
the next included, for the engine clock (sim.core.engine_clock) to run the pipeline.
Communication (TP all-reduce, EP dispatch and combine, stage sends) is the `allreduce`
class. Plain Python, memoised on the token count as sim.cost.roofline is.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from sim.cost.batch import BatchSummary
from sim.cost.breakdown import OP_CLASSES, ZERO_OP, OpCost, StepCost
from sim.cost.comm import Links, allreduce_s, dispatch_combine_s, stage_send_s
from sim.cost.efficiency import EfficiencyModel, KernelTime
from sim.cost.mla import (
    MlaAttentionCoefficients,
    MlaShapes,
    absorb_gemms,
    kv_up_projection,
    mla_o_proj,
    mla_qkv_proj,
)
from sim.cost.moe import MoeShapes, fused_moe_launches, moe_elementwise_rows, router, shared_experts
from sim.cost.mla_backend import mla_decode_provenance, resolve_mla_backend
from sim.cost.moe_mla_fits import moe_mla_kernels
from sim.cost.operators import (
    ACT_BYTES,
    ADD_RMSNORM_FLOPS,
    ROPE_FLOPS,
    SILU_MUL_FLOPS,
    AttentionCoefficients,
    Gemm,
    LayerShapes,
    TensorFormats,
    Work,
    lm_head,
    mlp,
    o_proj,
    qkv_proj,
    step_elementwise,
)
from sim.cost.roofline import ACT_BYTES_ALLREDUCE, peak_flops, price_gemms
from sim.errors import ConfigError
from sim.hardware_spec import HardwareSpec
from sim.model_spec import ModelSpec
from sim.parallel import ParallelSpec, pp_layer_counts
from sim.precision import PrecisionSpec

_QKV, _PREFILL, _DECODE, _O, _MLP, _HEAD, _EW, _COMM = range(len(OP_CLASSES))


def _add(a: OpCost, b: OpCost, scale: float = 1.0) -> OpCost:
    return OpCost(
        time_s=a.time_s + scale * b.time_s,
        flops=a.flops + scale * b.flops,
        bytes=a.bytes + scale * b.bytes,
        compute_s=a.compute_s + scale * b.compute_s,
        memory_s=a.memory_s + scale * b.memory_s,
    )


def _comm(time_s: float, nbytes: float = 0.0) -> OpCost:
    return OpCost(time_s=time_s, bytes=nbytes)


class StagedCostModel:
    """Prices a `BatchSummary` for the whole engine of `parallel` (see the module docstring)."""

    def __init__(
        self,
        model: ModelSpec,
        hardware: HardwareSpec,
        precision: PrecisionSpec,
        parallel: ParallelSpec,
        efficiency: EfficiencyModel,
        step_overhead_s: float,
        mla_backend: str = "auto",
    ) -> None:
        if step_overhead_s < 0.0:
            raise ConfigError(f"cost.step_overhead_ms must be >= 0, got {step_overhead_s * 1e3}")
        if parallel.tp > 1 and hardware.interconnect_bandwidth <= 0.0:
            raise ConfigError(f"parallel.tp={parallel.tp} needs hardware.interconnect_bandwidth_gbps > 0")
        self.model, self.hardware, self.precision = model, hardware, precision
        self.parallel = parallel
        self.tp, self.pp, self.dp, self.ep = parallel.tp, parallel.pp, parallel.dp, parallel.ep
        self.efficiency = efficiency
        self.step_overhead_s = step_overhead_s
        self.links = Links.of(hardware)
        self.formats = f = TensorFormats.resolve(precision, hardware)
        for dtype in {f.gemm_dtype, "bf16", f.attention_dtype}:
            peak_flops(hardware, dtype)
        self.shapes = LayerShapes.from_model(model, parallel.tp)
        self.dense_shapes = dataclasses.replace(
            self.shapes, intermediate=model.intermediate_size // self.tp, num_experts=0, top_k=0
        )
        self.mla = MlaShapes.from_model(model, self.tp) if model.is_mla else None
        if self.mla is not None:
            self.mla_attention = MlaAttentionCoefficients.from_shapes(self.mla, f)
            # the decode backend vLLM runs here (sim.cost.mla_backend): only TRITON_MLA is measured
            self.mla_backend = resolve_mla_backend(
                mla_backend, hardware, precision.kv_cache_dtype, model.qk_nope_head_dim
            )
        else:
            self.attention = AttentionCoefficients.from_shapes(self.shapes, f)
        self.moe = MoeShapes.from_model(model, self.tp, self.ep, parallel.ep_load_imbalance) if model.is_moe else None
        # fused_moe and MLA-decode curves where measured or transferred (sim.cost.moe_mla_fits)
        self.moe_mla = moe_mla_kernels(efficiency, hardware) if (self.mla or self.moe) else None
        self.stage_layers = self._stage_layers()
        self._inv_vector_flops = 1.0 / hardware.vector_flops if hardware.vector_flops > 0 else 0.0
        self._by_tokens: dict[int, tuple[tuple[OpCost, ...], tuple[float, ...]]] = {}
        self._by_seqs: dict[int, OpCost] = {}
        self._absorb_by_seqs: dict[int, OpCost] = {}  # MLA decode's absorbed up-projections
        self._empty = StepCost(ops=(ZERO_OP,) * len(OP_CLASSES), gpu_time_s=0.0, overhead_s=step_overhead_s)

    def _stage_layers(self) -> tuple[tuple[int, int], ...]:
        """(dense layers, MoE layers) of each stage; DeepSeek's dense layers come first."""
        dense_first = self.model.num_dense_layers if self.model.is_moe else self.model.num_hidden_layers
        out, start = [], 0
        for count in pp_layer_counts(self.model.num_hidden_layers, self.pp):
            dense = max(0, min(start + count, dense_first) - start)
            out.append((dense, count - dense))
            start += count
        return tuple(out)

    # ---- one step -----------------------------------------------------------------------

    def step_cost(self, batch: BatchSummary) -> StepCost:
        num_tokens = batch.num_tokens
        if num_tokens == 0:
            return self._empty
        part = self._by_tokens.get(num_tokens)
        if part is None:
            part = self._by_tokens[num_tokens] = self._price_token_part(num_tokens)
        token_ops, stage_token_s = part
        num_seqs = -(-batch.num_seqs // self.dp)
        head = self._by_seqs.get(num_seqs)
        if head is None:
            head = self._by_seqs[num_seqs] = self._price_gemms(lm_head(self.shapes, num_seqs))
        prefill = self._attention_prefill(batch) if batch.num_prefill_tokens else ZERO_OP
        decode = self._attention_decode(batch) if batch.num_decode_seqs else ZERO_OP
        attention_s = prefill.time_s + decode.time_s
        stages = [
            t + (dense + moe) * attention_s for t, (dense, moe) in zip(stage_token_s, self.stage_layers)
        ]
        stages[-1] += head.time_s
        layers = self.model.num_hidden_layers
        ops = list(token_ops)
        ops[_PREFILL] = _add(ZERO_OP, prefill, layers)
        ops[_DECODE] = _add(ZERO_OP, decode, layers)
        ops[_HEAD] = head
        if self.pp > 1:  # one GPU's mean over the stages
            ops = [_add(ZERO_OP, op, 1.0 / self.pp) for op in ops]
            return StepCost(tuple(ops), sum(stages) / self.pp, self.step_overhead_s, tuple(stages))
        return StepCost(tuple(ops), stages[0], self.step_overhead_s)

    # ---- the part that depends on the token count alone ---------------------------------

    def _price_token_part(self, num_tokens: int) -> tuple[tuple[OpCost, ...], tuple[float, ...]]:
        """Every layer's projections, MLPs, element-wise kernels and communication (whole
        pipeline, one GPU per stage), and each stage's time for them."""
        f, h = self.formats, self.shapes.hidden
        rank = -(-num_tokens // self.dp)
        if self.mla is not None:
            qkv, o = self._price_gemms(mla_qkv_proj(self.mla, f, rank)), self._price_gemms(mla_o_proj(self.mla, f, rank))
        else:
            qkv, o = self._price_gemms(qkv_proj(self.shapes, f, rank)), self._price_gemms(o_proj(self.shapes, f, rank))
        attn_ew = self._elementwise(self._attention_elementwise(rank), rank)
        allreduce = allreduce_s(self.efficiency, self.links, rank * h * ACT_BYTES_ALLREDUCE, self.tp)
        ar = _comm(allreduce, rank * h * ACT_BYTES_ALLREDUCE if self.tp > 1 else 0.0)
        dense_mlp = self._price_gemms(mlp(self.dense_shapes, f, rank))
        dense_ew = self._elementwise(self._mlp_elementwise(rank, rank, self.dense_shapes.intermediate), rank)
        dense_layer = (qkv, o, dense_mlp, _add(attn_ew, dense_ew), _add(ar, ar))
        layer_kinds = [dense_layer, dense_layer]
        if self.moe is not None:
            m = self.moe
            moe_mlp = _add(
                self._price_gemms((router(m, rank), *shared_experts(m, f, rank))),
                self._routed_experts(num_tokens, rank),
            )
            rows = moe_elementwise_rows(m, num_tokens, rank)
            moe_ew = self._elementwise(self._moe_elementwise(rank, rows), rank)
            if self.ep > 1:
                dispatch, combine = dispatch_combine_s(self.efficiency, self.links, num_tokens, h, self.ep)
                moe_comm = _comm(dispatch + combine, 2 * num_tokens * h * ACT_BYTES)
            else:
                moe_comm = ar
            layer_kinds[1] = (qkv, o, moe_mlp, _add(attn_ew, moe_ew), _add(ar, moe_comm))
        embed = step_elementwise(self.shapes, rank)
        embed_ew = self._elementwise(embed, rank)
        totals = [ZERO_OP] * len(OP_CLASSES)
        stage_s = []
        for index, counts in enumerate(self.stage_layers):
            stage = [ZERO_OP] * len(OP_CLASSES)
            for kind, count in zip(layer_kinds, counts):
                for slot, op in zip((_QKV, _O, _MLP, _EW, _COMM), kind):
                    stage[slot] = _add(stage[slot], op, count)
            if index == 0:
                stage[_EW] = _add(stage[_EW], embed_ew)
                stage[_COMM] = _add(stage[_COMM], ar)  # after the vocab-parallel embedding
            if index < self.pp - 1:
                send = stage_send_s(self.efficiency, self.links, rank, h, self.tp, self.parallel.stage_crosses_nodes(index))
                stage[_COMM] = _add(stage[_COMM], _comm(send, 2 * rank * h * ACT_BYTES / self.tp))
            stage_s.append(sum(op.time_s for op in stage))
            totals = [_add(a, b) for a, b in zip(totals, stage)]
        return tuple(totals), tuple(stage_s)

    def _price_gemms(self, gemms: tuple[Gemm, ...], kernels: Sequence[KernelTime] | None = None) -> OpCost:
        flops, nbytes, k = price_gemms(self.efficiency, gemms, self._inv_vector_flops, kernels)
        return OpCost(k.time_s, flops, nbytes, k.compute_s, k.memory_s)

    def _routed_experts(self, group_tokens: int, rank_tokens: int) -> OpCost:
        """The routed experts' w13 and w2 on the fused_moe curve, or as dense GEMMs without one."""
        m, f = self.moe, self.formats
        assert m is not None and self.moe_mla is not None
        launches = fused_moe_launches(m, f, group_tokens, rank_tokens, self.hardware.name)
        gemms = tuple(launch.gemm for launch in launches)
        times = [self.moe_mla.grouped_gemm_time(launch) for launch in launches]
        if any(t is None for t in times):  # no fused_moe curve: dense GEMMs
            return self._price_gemms(gemms)
        return self._price_gemms(gemms, times)

    def _elementwise(self, work: Work, rows: int) -> OpCost:
        k: KernelTime = self.efficiency.elementwise(work.flops, work.bytes, rows)
        return OpCost(k.time_s, work.flops, work.bytes, k.compute_s, k.memory_s)

    def _attention_elementwise(self, m: int) -> Work:
        """The add+RMSNorm before attention and RoPE (MLA: on the rope parts of q and k)."""
        mh = m * self.shapes.hidden
        if self.mla is not None:
            rope = m * (self.mla.heads + 1) * self.mla.rope
            norms = m * (self.mla.q_lora_rank + self.mla.kv_lora_rank)  # q_a / kv_a layernorms
        else:
            rope = m * (self.shapes.heads + self.shapes.kv_heads) * self.shapes.head_dim
            norms = 0
        flops = ADD_RMSNORM_FLOPS * (mh + norms) + ROPE_FLOPS * rope
        nbytes = (4 * mh + 2 * norms + 2 * rope + m * self.shapes.head_dim) * ACT_BYTES
        return Work(flops, nbytes)

    def _mlp_elementwise(self, m: int, rows: float, width: int) -> Work:
        """The add+RMSNorm before the MLP and SiLU-and-mul over `rows` rows of `width`."""
        mh = m * self.shapes.hidden
        return Work(
            ADD_RMSNORM_FLOPS * mh + SILU_MUL_FLOPS * rows * width,
            (4 * mh + rows * 3 * width) * ACT_BYTES,
        )

    def _moe_elementwise(self, m: int, rows: float) -> Work:
        """Routed SiLU-and-mul, the top-k weighted sum, and the shared experts' SiLU."""
        moe = self.moe
        assert moe is not None
        routed = self._mlp_elementwise(m, rows, moe.expert_width)
        shared = SILU_MUL_FLOPS * m * moe.shared_width
        combine = (rows + m) * self.shapes.hidden
        return Work(
            routed.flops + shared + 2.0 * rows * self.shapes.hidden,
            routed.bytes + (3 * m * moe.shared_width + combine) * ACT_BYTES,
        )

    # ---- attention on this GPU's DP rank --------------------------------------------------

    def _attention_prefill(self, batch: BatchSummary) -> OpCost:
        dp = self.dp
        tokens = -(-batch.num_prefill_tokens // dp)
        seqs = -(-batch.num_prefill_seqs // dp)
        pairs, kv_tokens = batch.prefill_attn_pairs / dp, math.ceil(batch.prefill_kv_tokens / dp)
        if self.mla is not None:
            flops, nbytes = self.mla_attention.prefill(tokens, pairs, kv_tokens)
            up = self._price_gemms((kv_up_projection(self.mla, self.formats, kv_tokens),))
        else:
            flops, nbytes = self.attention.prefill(tokens, pairs, kv_tokens)
            up = ZERO_OP
        k = self.efficiency.attention_prefill(flops, nbytes, tokens, seqs, self.formats.attention_dtype)
        return _add(OpCost(k.time_s, flops, nbytes, k.compute_s, k.memory_s), up)

    def _attention_decode(self, batch: BatchSummary) -> OpCost:
        seqs = -(-batch.num_decode_seqs // self.dp)
        context = math.ceil(batch.decode_context_tokens / self.dp)
        if self.mla is not None:
            flops, nbytes = self.mla_attention.decode(seqs, context)
            absorb = self._absorb_by_seqs.get(seqs)
            if absorb is None:
                absorb = self._absorb_by_seqs[seqs] = self._price_gemms(absorb_gemms(self.mla, seqs))
            bf16 = self.formats.attention_dtype == "bf16"
            triton = self.moe_mla.mla_decode_time(flops, nbytes, seqs) if bf16 else None
            k = triton if self.mla_backend.measured else None
        else:
            flops, nbytes = self.attention.decode(seqs, context)
            absorb, k, triton = ZERO_OP, None, None
        if k is None:
            k = self.efficiency.attention_decode(flops, nbytes, seqs, context, self.formats.attention_dtype)
            if triton is not None and triton.time_s < k.time_s:
                k = triton  # the measured TRITON_MLA bounds a backend vLLM prefers to it (mla_backend.ASSUMED_MLA)
        return _add(OpCost(k.time_s, flops, nbytes, k.compute_s, k.memory_s), absorb)

    # ---- what the run states ------------------------------------------------------------

    def _mla_on_curve(self) -> bool:
        """Whether the TRITON_MLA curve prices (or caps) this run's MLA decode."""
        return self.moe_mla.mla_decode is not None and self.formats.attention_dtype == "bf16"

    def provenance(self) -> dict[str, str]:
        extra = dict(self.moe_mla.provenance) if self.moe_mla is not None else {}
        if self.moe is None:
            extra.pop("grouped_gemm", None)
        if self.mla is None:
            extra.pop("attention_decode_mla", None)
        else:
            extra["attention_decode_mla"] = self._mla_statement(brief=False)
        return {**self.efficiency.provenance(), **extra}

    def _mla_statement(self, brief: bool = True) -> str:
        assert self.moe_mla is not None
        curve = self.moe_mla.provenance["attention_decode_mla"]
        return mla_decode_provenance(self.mla_backend, curve, self._mla_on_curve(), brief)

    def assumptions(self) -> dict[str, object]:
        from sim.cost.parallel_assumptions import parallel_assumptions

        profile = getattr(self.efficiency, "profile", None)
        clocks = (
            f"fitted efficiencies absorb the clocks the calibration GPU ran at ({profile.measured_on})"
            if profile is not None
            else "no calibration: flat factors"
        )
        return {
            "efficiency_source": self.provenance(),
            "calibration_clocks": clocks,
            **parallel_assumptions(self.model, self.hardware, self.parallel),
            **({"mla_attention": self._mla_statement()} if self.mla else {}),
        }
