"""The roofline price of one engine step: per operator class, the slower of its two roofs.

For each class of `OP_CLASSES`, on one GPU of the TP group and summed over the layers:

    compute_s = FLOPs / (peak FLOP/s of its dtype x compute efficiency)
    memory_s  = bytes / (HBM bandwidth x memory efficiency)
    time_s    = max(compute_s, memory_s)

A class holding several kernels (gate_up and down) sums their roofs before taking the max.
All-reduces are latency/link bound: they report time and message bytes, no roofs. The step
adds a fixed CPU overhead (scheduling, input preparation, sampling) to the GPU time.

The engine calls `step_cost` once per step, tens of thousands of times per run, so the work
that depends only on the number of tokens (GEMMs, element-wise, all-reduce) or of sequences
(lm_head) is memoised; keys are bounded by the scheduler's token and sequence budgets. What
remains per call is the attention arithmetic and the result's allocation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.cost.batch import BatchSummary
from sim.cost.breakdown import OP_CLASSES, ZERO_OP, OpCost, StepCost
from sim.cost.efficiency import EfficiencyModel, FlatEfficiency
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
from sim.errors import ConfigError
from sim.hardware_spec import HardwareSpec
from sim.model_spec import ModelSpec
from sim.precision import PrecisionSpec

if TYPE_CHECKING:
    from sim.config.schema import CostConfig

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


def peak_flops(hardware: HardwareSpec, dtype: str) -> float:
    """Dense tensor-core FLOP/s for `dtype`; bf16 and fp16 run at the same rate, so a
    datasheet that lists one serves for the other."""
    peak = hardware.peak_flops.get(dtype, 0.0)
    if peak <= 0.0 and dtype in ("bf16", "fp16"):
        peak = hardware.peak_flops.get("fp16" if dtype == "bf16" else "bf16", 0.0)
    if peak <= 0.0:
        raise ConfigError(f"hardware {hardware.name} lists no {dtype} peak FLOP/s")
    return peak


def _roof(flops: float, nbytes: float, compute_s: float, memory_s: float) -> OpCost:
    return OpCost(
        time_s=max(compute_s, memory_s),
        flops=flops,
        bytes=nbytes,
        compute_s=compute_s,
        memory_s=memory_s,
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
        self._peaks = {
            dtype: peak_flops(hardware, dtype)
            for dtype in (self.formats.gemm_dtype, UNQUANTIZED_DTYPE)
        }
        self._inv_attention_peak = 1.0 / peak_flops(hardware, self.formats.attention_dtype)
        self._inv_bw = 1.0 / (hardware.memory_bandwidth * efficiency.memory())
        self._inv_elementwise_bw = 1.0 / (hardware.memory_bandwidth * efficiency.elementwise())
        vector = hardware.vector_flops * efficiency.elementwise()
        self._inv_vector = 1.0 / vector if vector > 0.0 else 0.0
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
        cost_cfg: CostConfig,
    ) -> RooflineCostModel:
        """The first model: flat efficiencies and overhead straight from `CostConfig`."""
        return cls(
            model,
            hardware,
            precision,
            tp,
            efficiency=FlatEfficiency.from_config(cost_cfg, hardware),
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

    def _price_gemms(self, gemms: tuple[Gemm, ...]) -> OpCost:
        """One layer's GEMMs of a class, times the number of layers."""
        layers = self.num_layers
        flops = nbytes = compute_s = 0.0
        for g in gemms:
            eff = self.efficiency.gemm(g.m, g.n, g.k, g.dtype)
            compute_s += g.flops / (self._peaks[g.dtype] * eff)
            flops += g.flops
            nbytes += g.bytes
        flops, nbytes, compute_s = layers * flops, layers * nbytes, layers * compute_s
        return _roof(flops, nbytes, compute_s, nbytes * self._inv_bw)

    def _price_token_part(
        self, num_tokens: int
    ) -> tuple[OpCost, OpCost, OpCost, OpCost, OpCost, float]:
        """Everything that depends on the number of token rows only, and its summed time."""
        s, f = self.shapes, self.formats
        qkv = self._price_gemms(qkv_proj(s, f, num_tokens))
        o = self._price_gemms(o_proj(s, f, num_tokens))
        mlp_cost = self._price_gemms(mlp(s, f, num_tokens))
        per_layer, per_step = layer_elementwise(s, num_tokens), step_elementwise(s, num_tokens)
        flops = self.num_layers * per_layer.flops + per_step.flops
        nbytes = self.num_layers * per_layer.bytes + per_step.bytes
        elementwise = _roof(
            flops, nbytes, flops * self._inv_vector, nbytes * self._inv_elementwise_bw
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
        (g,) = lm_head(self.shapes, num_seqs)
        eff = self.efficiency.gemm(g.m, g.n, g.k, g.dtype)
        compute_s = g.flops / (self._peaks[g.dtype] * eff)
        return _roof(g.flops, g.bytes, compute_s, g.bytes * self._inv_bw)

    def _attention_prefill(self, batch: BatchSummary) -> OpCost:
        flops, nbytes = self.attention.prefill(
            batch.num_prefill_tokens, batch.prefill_attn_pairs, batch.prefill_kv_tokens
        )
        eff = self.efficiency.attention_prefill(batch.num_prefill_tokens, batch.prefill_kv_tokens)
        layers = self.num_layers
        flops *= layers
        nbytes *= layers
        return _roof(flops, nbytes, flops * self._inv_attention_peak / eff, nbytes * self._inv_bw)

    def _attention_decode(self, batch: BatchSummary) -> OpCost:
        flops, nbytes = self.attention.decode(batch.num_decode_seqs, batch.decode_context_tokens)
        eff = self.efficiency.attention_decode(batch.num_decode_seqs, batch.decode_context_tokens)
        layers = self.num_layers
        flops *= layers
        nbytes *= layers
        return _roof(flops, nbytes, flops * self._inv_attention_peak / eff, nbytes * self._inv_bw)


def build_cost_model(
    model: ModelSpec,
    hardware: HardwareSpec,
    precision: PrecisionSpec,
    tp: int,
    cost_cfg: CostConfig,
) -> RooflineCostModel:
    """The cost model a run uses, from the typed specs and the `cost` config group."""
    return RooflineCostModel.from_config(model, hardware, precision, tp, cost_cfg)
