"""Numeric formats: bytes per element and which tensor-core rate a GEMM runs at."""

from __future__ import annotations

from dataclasses import dataclass

# Bytes per element of each storage format. int4/fp4 pack two values per byte.
DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
    "fp4": 0.5,
}

# What each field of a precision may name. The GEMM ("activation") dtype picks a tensor-core
# rate, so it must be one a datasheet lists; int4 is storage only (dequantised to bf16).
WEIGHT_DTYPES: tuple[str, ...] = ("bf16", "fp16", "fp8", "int8", "int4", "fp4")
COMPUTE_DTYPES: tuple[str, ...] = ("bf16", "fp16", "fp8", "int8", "fp4")
KV_CACHE_DTYPES: tuple[str, ...] = ("auto", "bf16", "fp16", "fp8")

# The dtype of everything a quantisation method leaves alone: embeddings, LM head, norms, the
# MoE router, the activations between layers. vLLM's quantised linear methods replace only the
# q/k/v/o and MLP projections; the rest stays in the checkpoint's dtype (bf16 for our catalog).
MODEL_DTYPE = "bf16"

# Scale formats: weight-only int8/int4 (GPTQ/AWQ style, symmetric) store one fp16/bf16 scale per
# group of weights; NVFP4 stores one fp8 (e4m3) scale per block of 16. Per-tensor and
# per-channel scales of fp8/int8 W8A8 are a few bytes per row and are not counted.
WEIGHT_ONLY_SCALE_BYTES = 2.0
FP4_BLOCK_SCALE_BYTES = 1.0


@dataclass(frozen=True, slots=True)
class PrecisionSpec:
    name: str
    weight_dtype: str  # storage format of the weights
    activation_dtype: str  # format the GEMMs compute in (the tensor-core rate used)
    kv_cache_dtype: str  # resolved: never "auto"
    quantization_group_size: int = 128

    @property
    def weight_bytes(self) -> float:
        return DTYPE_BYTES[self.weight_dtype]

    @property
    def activation_bytes(self) -> float:
        return DTYPE_BYTES[self.activation_dtype]

    @property
    def kv_cache_bytes(self) -> float:
        return DTYPE_BYTES[self.kv_cache_dtype]

    @property
    def is_weight_only(self) -> bool:
        """Weights stored narrower than the GEMM computes: dequantized on the fly (W4A16, W8A16)."""
        return DTYPE_BYTES[self.weight_dtype] < DTYPE_BYTES[self.activation_dtype]

    @property
    def scale_bytes_per_weight(self) -> float:
        """Quantisation scales stored alongside each weight of a quantised layer, amortised."""
        if self.is_weight_only:
            return WEIGHT_ONLY_SCALE_BYTES / self.quantization_group_size
        if self.weight_dtype == "fp4":
            return FP4_BLOCK_SCALE_BYTES / self.quantization_group_size
        return 0.0

    @property
    def weight_bytes_per_param(self) -> float:
        """Bytes per weight of a quantised linear layer, its share of the scales included."""
        return self.weight_bytes + self.scale_bytes_per_weight


def resolve_kv_cache_dtype(kv_cache_dtype: str, activation_dtype: str) -> str:
    """vLLM's `kv_cache_dtype="auto"` means the model dtype, not the GEMM dtype: an fp8 W8A8
    checkpoint still caches K and V in bf16 unless fp8 KV is asked for. So "auto" becomes the
    activation dtype when that is a 16-bit float, and bf16 otherwise (fp8/int8/fp4 GEMMs, whose
    activations are quantised only at each GEMM's input)."""
    if kv_cache_dtype != "auto":
        return kv_cache_dtype
    return activation_dtype if activation_dtype in ("bf16", "fp16") else MODEL_DTYPE


# The formats of configs/precision/, for the memory planner's "what would fit" advice (a test
# keeps these equal to the YAML files).
REFERENCE_PRECISIONS: tuple[PrecisionSpec, ...] = (
    PrecisionSpec("bf16", "bf16", "bf16", "bf16"),
    PrecisionSpec("bf16_kv8", "bf16", "bf16", "fp8"),
    PrecisionSpec("fp8", "fp8", "fp8", "bf16"),
    PrecisionSpec("fp8_kv", "fp8", "fp8", "fp8"),
    PrecisionSpec("int8", "int8", "bf16", "bf16", 128),
    PrecisionSpec("int4", "int4", "bf16", "bf16", 128),
    PrecisionSpec("fp4", "fp4", "fp4", "bf16", 16),
)
