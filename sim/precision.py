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
