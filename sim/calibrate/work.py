"""Our own accounting of a measured kernel or step: the FLOPs, bytes and shapes the cost model
would price. Fitting against these (rather than a benchmark's own byte counts) makes a fitted
curve mean exactly what the cost model will use it for."""

from __future__ import annotations

from dataclasses import dataclass

from sim.cost.operators import (
    AttentionCoefficients,
    Gemm,
    LayerShapes,
    TensorFormats,
    Work,
    layer_elementwise,
    lm_head,
    mlp,
    o_proj,
    qkv_proj,
    step_elementwise,
)
from sim.hardware_spec import HardwareSpec
from sim.model_spec import ModelSpec
from sim.precision import PrecisionSpec
from sim.step import StepShape

BF16 = PrecisionSpec("bf16", "bf16", "bf16", "bf16")


@dataclass(frozen=True, slots=True)
class AttentionWork:
    """One layer's attention kernel: FLOPs, bytes and the shape its efficiency depends on."""

    flops: float
    bytes: float
    num_tokens: int  # prefill: query tokens; decode: sequences
    num_seqs: int
    context_tokens: int  # decode only


@dataclass(frozen=True, slots=True)
class StepWork:
    layers: int
    gemms: dict[str, tuple[Gemm, ...]]  # class -> one layer's kernels (lm_head: the step's)
    prefill: AttentionWork | None
    decode: AttentionWork | None
    elementwise_layer: Work
    elementwise_step: Work
    kv_heads: int  # on one GPU
    num_tokens: int


def step_work(
    model: ModelSpec,
    hardware: HardwareSpec,
    shape: StepShape,
    tp: int = 1,
    precision: PrecisionSpec = BF16,
) -> StepWork:
    shapes = LayerShapes.from_model(model, tp)
    formats = TensorFormats.resolve(precision, hardware)
    attention = AttentionCoefficients.from_shapes(shapes, formats)
    batch = shape.batch_summary()
    m = batch.num_tokens
    gemms = {
        "qkv_proj": qkv_proj(shapes, formats, m),
        "o_proj": o_proj(shapes, formats, m),
        "mlp": mlp(shapes, formats, m),
        "lm_head": lm_head(shapes, batch.num_seqs),
    }
    prefill = decode = None
    if batch.num_prefill_tokens:
        flops, nbytes = attention.prefill(
            batch.num_prefill_tokens, batch.prefill_attn_pairs, batch.prefill_kv_tokens
        )
        prefill = AttentionWork(flops, nbytes, batch.num_prefill_tokens, batch.num_prefill_seqs, 0)
    if batch.num_decode_seqs:
        flops, nbytes = attention.decode(batch.num_decode_seqs, batch.decode_context_tokens)
        decode = AttentionWork(
            flops, nbytes, batch.num_decode_seqs, batch.num_decode_seqs, batch.decode_context_tokens
        )
    return StepWork(
        layers=model.num_hidden_layers,
        gemms=gemms,
        prefill=prefill,
        decode=decode,
        elementwise_layer=layer_elementwise(shapes, m),
        elementwise_step=step_elementwise(shapes, m),
        kv_heads=shapes.kv_heads,
        num_tokens=m,
    )
