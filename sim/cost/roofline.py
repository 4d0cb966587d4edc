"""The roofline price of one engine step: per operator class, what its kernels take.

For each class of `OP_CLASSES`, on one GPU of the TP group and summed over the layers, an
`EfficiencyModel` turns each kernel's FLOPs and bytes into a `KernelTime`:

    compute_s = FLOPs / (peak FLOP/s of its dtype x compute efficiency)
    memory_s  = bytes / (HBM bandwidth x memory efficiency)
    time_s    >= max(compute_s, memory_s)     (= for the flat model; calibrated models add
                                               fixed kernel costs and a smooth ridge)

All-reduces are latency/link bound: they report time and message bytes, no roofs. The step
adds a fixed CPU overhead (scheduling, input preparation, sampling) to the GPU time.

The engine calls `step_cost` once per step, tens of thousands of times per run, so the work
that depends only on the number of tokens (GEMMs, element-wise, all-reduce) or of sequences
(lm_head) is memoised; keys are bounded by the scheduler's token and sequence budgets. What
remains per call is the attention arithmetic and the result's allocation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from sim.cost.batch import BatchSummary
from sim.cost.breakdown import OP_CLASSES, ZERO_OP, OpCost, StepCost
from sim.cost.efficiency import (
    EfficiencyModel,
    KernelTime,
    tensor_peak_flops,
)
from sim.cost.operators import (
    UNQUANTIZED_DTYPE,
    AttentionCoefficients,
    Gemm,
    LayerShapes,
    TensorFormats,
    layer_elementwise,
    lm_head,
    mlp,
    o_proj,
    qkv_proj,
    step_elementwise,
)
from sim.cost.profiles import build_efficiency
from sim.errors import ConfigError
from sim.hardware_spec import HardwareSpec
from sim.model_spec import ModelSpec
from sim.parallel import ParallelSpec
from sim.precision import PrecisionSpec

if TYPE_CHECKING:
    from sim.cost.cost_spec import CostSpec
    from sim.cost.staged import StagedCostModel

# step_cost builds its ops tuple positionally; fail at import if the classes are reordered.
assert OP_CLASSES == (
    "qkv_proj",
    "attention_prefill",
    "attention_decode",
    "o_proj",
    "mlp",
    "lm_head",
    "elementwise",
    "allreduce",
), OP_CLASSES

ACT_BYTES_ALLREDUCE = 2.0  # the residual stream is reduced in bf16


def price_gemms(
    efficiency: EfficiencyModel, gemms: tuple[Gemm, ...], inv_vector_flops: float,
    kernels: Sequence[KernelTime] | None = None,
) -> tuple[float, float, KernelTime]:  # fmt: skip
    """FLOPs, bytes and summed kernel time of GEMMs each priced as its own kernel (by the
    efficiency model's GEMM curve, or `kernels`, one time per GEMM priced elsewhere); weight
    widening (`dequant_ops`) runs on the CUDA cores, serial with the MMA work."""
    flops = nbytes = compute_s = memory_s = time_s = 0.0
    for i, g in enumerate(gemms):
        kernel = kernels[i] if kernels is not None else efficiency.gemm(g.m, g.n, g.k, g.dtype, g.flops, g.bytes)
        flops += g.flops
        nbytes += g.bytes
        compute_s += kernel.compute_s
        memory_s += kernel.memory_s
        time_s += kernel.time_s
        if g.dequant_ops:
            dequant_s = g.dequant_ops * inv_vector_flops
            compute_s += dequant_s
            time_s += dequant_s
    return flops, nbytes, KernelTime(compute_s, memory_s, time_s)


def peak_flops(hardware: HardwareSpec, dtype: str) -> float:
    """Dense tensor-core FLOP/s of `hardware` for `dtype` (bf16 and fp16 interchangeable)."""
    try:
        return tensor_peak_flops(hardware.peak_flops, dtype)
    except ConfigError:
        raise ConfigError(f"hardware {hardware.name} lists no {dtype} peak FLOP/s") from None


def _op(flops: float, nbytes: float, kernel: KernelTime, layers: int = 1) -> OpCost:
    """A class's cost from one layer's kernel time (and that layer's work), over `layers`."""
    return OpCost(
        time_s=layers * kernel.time_s,
        flops=layers * flops,
        bytes=layers * nbytes,
        compute_s=layers * kernel.compute_s,
        memory_s=layers * kernel.memory_s,
    )


class RooflineCostModel:
    """Prices a `BatchSummary` on one GPU of a TP group of a Llama-style (or Mixtral-style
    MoE) decoder. Shapes, formats, inverse roofs and attention coefficients are fixed at
    construction; `step_cost` only multiplies and looks up."""

    def __init__(
        self,
        model: ModelSpec,
        hardware: HardwareSpec,
        precision: PrecisionSpec,
        tp: int,
        efficiency: EfficiencyModel,
        step_overhead_s: float,
    ) -> None:
        if step_overhead_s < 0.0:
            raise ConfigError(f"cost.step_overhead_ms must be >= 0, got {step_overhead_s * 1e3}")
        if hardware.memory_bandwidth <= 0.0:
            raise ConfigError(f"hardware {hardware.name} needs a memory bandwidth > 0")
        if needs_staged_model(model, None):  # a caller's mistake: build_cost_model routes these
            raise ValueError(f"{model.name}: MoE and MLA models are priced by StagedCostModel (build_cost_model)")
        self.model = model
        self.hardware = hardware
        self.precision = precision
        self.tp = tp
        self.efficiency = efficiency
        self.step_overhead_s = step_overhead_s
        self.num_layers = model.num_hidden_layers
        self.shapes = LayerShapes.from_model(model, tp)
        self.formats = TensorFormats.resolve(precision, hardware)
        self.attention = AttentionCoefficients.from_shapes(self.shapes, self.formats)
        for dtype in (self.formats.gemm_dtype, UNQUANTIZED_DTYPE, self.formats.attention_dtype):
            peak_flops(hardware, dtype)  # refuse a dtype the datasheet has no rate for
        self._inv_vector_flops = 1.0 / hardware.vector_flops if hardware.vector_flops > 0 else 0.0
        # all-reduces per step: two per layer, plus one after the vocab-parallel embedding
        self._num_allreduces = 2 * self.num_layers + 1 if tp > 1 else 0
        self._by_tokens: dict[int, tuple[OpCost, OpCost, OpCost, OpCost, OpCost, float]] = {}
        self._by_seqs: dict[int, OpCost] = {}
        self._empty = StepCost(
            ops=(ZERO_OP,) * len(OP_CLASSES), gpu_time_s=0.0, overhead_s=step_overhead_s
        )

    @classmethod
    def from_config(
        cls,
        model: ModelSpec,
        hardware: HardwareSpec,
        precision: PrecisionSpec,
        tp: int,
        cost_cfg: CostSpec,
    ) -> RooflineCostModel:
        """Efficiencies as `cost.efficiency` selects (see sim.cost.profiles), and the CPU
        overhead per step from `CostSpec`."""
        shapes = LayerShapes.from_model(model, tp)
        return cls(
            model,
            hardware,
            precision,
            tp,
            efficiency=build_efficiency(hardware, cost_cfg, shapes.heads, shapes.kv_heads),
            step_overhead_s=cost_cfg.step_overhead_ms * 1e-3,
        )

    def step_cost(self, batch: BatchSummary) -> StepCost:
        """Price one step. Hot path: two dict lookups, attention arithmetic, one result."""
        num_tokens = batch.num_prefill_tokens + batch.num_decode_seqs
        if num_tokens == 0:
            return self._empty
        part = self._by_tokens.get(num_tokens)
        if part is None:
            part = self._by_tokens[num_tokens] = self._price_token_part(num_tokens)
        qkv, o, mlp_cost, elementwise, allreduce, token_time_s = part
        num_seqs = batch.num_prefill_seqs + batch.num_decode_seqs
        head = self._by_seqs.get(num_seqs)
        if head is None:
            head = self._by_seqs[num_seqs] = self._price_lm_head(num_seqs)
        prefill = self._attention_prefill(batch) if batch.num_prefill_tokens else ZERO_OP
        decode = self._attention_decode(batch) if batch.num_decode_seqs else ZERO_OP
        return StepCost(
            ops=(qkv, prefill, decode, o, mlp_cost, head, elementwise, allreduce),
            gpu_time_s=token_time_s + head.time_s + prefill.time_s + decode.time_s,
            overhead_s=self.step_overhead_s,
        )

    def provenance(self) -> dict[str, str]:
        """Where each efficiency figure came from (for the run manifest)."""
        return self.efficiency.provenance()

    def assumptions(self) -> dict[str, object]:
        """What no step time should be read without: where each efficiency came from, and the
        clocks behind the fitted ones (the roofs themselves are datasheet peaks)."""
        profile = getattr(self.efficiency, "profile", None)
        calibration_clocks = (
            f"fitted efficiencies absorb the clocks the calibration GPU ran at ({profile.measured_on})"
            if profile is not None
            else "no calibration: flat factors"
        )
        return {"efficiency_source": self.provenance(), "calibration_clocks": calibration_clocks}

    def _price_gemms(self, gemms: tuple[Gemm, ...], layers: int) -> OpCost:
        """A class's GEMMs (one layer's), each priced as its own kernel, times `layers`."""
        flops, nbytes, kernel = price_gemms(self.efficiency, gemms, self._inv_vector_flops)
        return _op(flops, nbytes, kernel, layers)

    def _price_token_part(
        self, num_tokens: int
    ) -> tuple[OpCost, OpCost, OpCost, OpCost, OpCost, float]:
        """Everything that depends on the number of token rows only, and its summed time."""
        s, f, layers = self.shapes, self.formats, self.num_layers
        qkv = self._price_gemms(qkv_proj(s, f, num_tokens), layers)
        o = self._price_gemms(o_proj(s, f, num_tokens), layers)
        mlp_cost = self._price_gemms(mlp(s, f, num_tokens), layers)
        per_layer, per_step = layer_elementwise(s, num_tokens), step_elementwise(s, num_tokens)
        layer_ew = self.efficiency.elementwise(per_layer.flops, per_layer.bytes, num_tokens)
        step_ew = self.efficiency.elementwise(per_step.flops, per_step.bytes, num_tokens)
        elementwise = OpCost(
            time_s=layers * layer_ew.time_s + step_ew.time_s,
            flops=layers * per_layer.flops + per_step.flops,
            bytes=layers * per_layer.bytes + per_step.bytes,
            compute_s=layers * layer_ew.compute_s + step_ew.compute_s,
            memory_s=layers * layer_ew.memory_s + step_ew.memory_s,
        )
        allreduce = self._price_allreduce(num_tokens)
        time_s = qkv.time_s + o.time_s + mlp_cost.time_s + elementwise.time_s + allreduce.time_s
        return qkv, o, mlp_cost, elementwise, allreduce, time_s

    def _price_allreduce(self, num_tokens: int) -> OpCost:
        """All-reduces of the m x hidden residual stream; `bytes` records message bytes."""
        if not self._num_allreduces:
            return ZERO_OP
        message_bytes = num_tokens * self.shapes.hidden * ACT_BYTES_ALLREDUCE
        time_s = self._num_allreduces * self.efficiency.allreduce_time_s(message_bytes, self.tp)
        return OpCost(time_s=time_s, bytes=self._num_allreduces * message_bytes)

    def _price_lm_head(self, num_seqs: int) -> OpCost:
        """Once per step, not per layer."""
        if num_seqs == 0:
            return ZERO_OP
        return self._price_gemms(lm_head(self.shapes, num_seqs), layers=1)

    def _attention_prefill(self, batch: BatchSummary) -> OpCost:
        flops, nbytes = self.attention.prefill(
            batch.num_prefill_tokens, batch.prefill_attn_pairs, batch.prefill_kv_tokens
        )
        kernel = self.efficiency.attention_prefill(
            flops, nbytes, batch.num_prefill_tokens, batch.num_prefill_seqs,
            self.formats.attention_dtype,
        )  # fmt: skip
        return _op(flops, nbytes, kernel, self.num_layers)

    def _attention_decode(self, batch: BatchSummary) -> OpCost:
        flops, nbytes = self.attention.decode(batch.num_decode_seqs, batch.decode_context_tokens)
        kernel = self.efficiency.attention_decode(
            flops, nbytes, batch.num_decode_seqs, batch.decode_context_tokens,
            self.formats.attention_dtype,
        )  # fmt: skip
        return _op(flops, nbytes, kernel, self.num_layers)


def needs_staged_model(model: ModelSpec, parallel: ParallelSpec | None) -> bool:
    """Pipeline stages, DP attention, EP, TP across nodes, MLA, MoE (fused_moe launches) or
    DeepSeek's layer mix need sim.cost.staged; the plain single-node TP model prices the rest."""
    layered = model.is_mla or model.is_moe or model.n_shared_experts > 0 or model.first_k_dense_replace > 0
    if parallel is None:
        return layered
    return layered or parallel.pp > 1 or parallel.dp > 1 or parallel.ep > 1 or parallel.tp_spans_nodes


def build_cost_model(
    model: ModelSpec,
    hardware: HardwareSpec,
    precision: PrecisionSpec,
    tp: int,
    cost_cfg: CostSpec,
    parallel: ParallelSpec | None = None,
) -> RooflineCostModel | StagedCostModel:
    """The cost model a run uses, from the typed specs and the `cost` config group."""
    if not needs_staged_model(model, parallel):
        return RooflineCostModel.from_config(model, hardware, precision, tp, cost_cfg)
    from sim.cost.staged import StagedCostModel

    layout = parallel or ParallelSpec(tp=tp, gpus_per_node=hardware.max_gpus_per_node)
    shapes = LayerShapes.from_model(model, layout.tp)
    q_heads, kv_heads = (shapes.heads, 1) if model.is_mla else (shapes.heads, shapes.kv_heads)
    efficiency = build_efficiency(hardware, cost_cfg, q_heads, kv_heads)
    return StagedCostModel(
        model, hardware, precision, layout, efficiency, cost_cfg.step_overhead_ms * 1e-3, cost_cfg.mla_backend
    )
