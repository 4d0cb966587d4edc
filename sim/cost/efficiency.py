"""How close each kind of kernel gets to the GPU's datasheet roofs.

The roofline model counts FLOPs and bytes exactly and leaves everything it cannot count (tile
quantisation, wave tails, kernel launch gaps, cache effects) to one fraction per kernel kind.
`EfficiencyModel` is the seam where calibration plugs in: the first model, `FlatEfficiency`,
returns the constants of `CostConfig`; a fitted model can return curves of the same arguments
(e.g. GEMM efficiency rising with `m` until the tensor cores fill) without touching the
operator accounting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sim.errors import ConfigError
from sim.hardware_spec import HardwareSpec

if TYPE_CHECKING:
    from sim.config.schema import CostConfig

FLAT_PROVENANCE = "flat default from config"


class EfficiencyModel(Protocol):
    """Fractions (0, 1] of the datasheet peaks that each kernel kind achieves.

    The roofline calls `gemm` once per GEMM shape (memoised by the cost model, so it may be
    slow), the attention methods once per step (keep them cheap), and `memory` / `elementwise`
    once at construction: they take no arguments, so the cost model folds them into constants.
    """

    def gemm(self, m: int, n: int, k: int, dtype: str) -> float:
        """Compute efficiency of an (m x k) @ (k x n) GEMM at the `dtype` tensor-core rate."""
        ...

    def attention_prefill(self, num_tokens: int, kv_tokens: int) -> float:
        """Compute efficiency of prefill attention: `num_tokens` queries, `kv_tokens` keys."""
        ...

    def attention_decode(self, num_seqs: int, context_tokens: int) -> float:
        """Compute efficiency of decode attention: `num_seqs` queries, `context_tokens` keys."""
        ...

    def memory(self) -> float:
        """Fraction of the HBM bandwidth that GEMMs and attention stream at."""
        ...

    def elementwise(self) -> float:
        """Fraction of both roofs (HBM bandwidth, vector FLOP/s) that element-wise kernels reach."""
        ...

    def allreduce_time_s(self, message_bytes: float, tp: int) -> float:
        """Wall time of one all-reduce of `message_bytes` across `tp` GPUs (0 when tp == 1)."""
        ...

    def provenance(self) -> dict[str, str]:
        """Where each figure came from, keyed by method name, for the run manifest."""
        ...


@dataclass(frozen=True, slots=True)
class FlatEfficiency:
    """One constant per kernel kind, and a ring all-reduce over the node's interconnect.

    The ring all-reduce moves 2 (tp - 1) / tp of the message through each GPU's link
    (reduce-scatter then all-gather) after one latency term; vLLM's custom one-shot all-reduce
    for small messages beats this, which calibration can capture by replacing this method.
    """

    gemm_efficiency: float
    attention_efficiency: float
    memory_efficiency: float
    elementwise_efficiency: float
    allreduce_efficiency: float
    interconnect_bandwidth: float  # bytes/s, per GPU, one direction
    interconnect_latency_s: float

    def __post_init__(self) -> None:
        for name in (
            "gemm_efficiency",
            "attention_efficiency",
            "memory_efficiency",
            "elementwise_efficiency",
            "allreduce_efficiency",
        ):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"cost.{name} must be in (0, 1], got {value}")

    @classmethod
    def from_config(cls, cost_cfg: CostConfig, hardware: HardwareSpec) -> FlatEfficiency:
        return cls(
            gemm_efficiency=cost_cfg.gemm_efficiency,
            attention_efficiency=cost_cfg.attention_efficiency,
            memory_efficiency=cost_cfg.memory_efficiency,
            elementwise_efficiency=cost_cfg.elementwise_efficiency,
            allreduce_efficiency=cost_cfg.allreduce_efficiency,
            interconnect_bandwidth=hardware.interconnect_bandwidth,
            interconnect_latency_s=hardware.interconnect_latency_s,
        )

    def gemm(self, m: int, n: int, k: int, dtype: str) -> float:
        return self.gemm_efficiency

    def attention_prefill(self, num_tokens: int, kv_tokens: int) -> float:
        return self.attention_efficiency

    def attention_decode(self, num_seqs: int, context_tokens: int) -> float:
        return self.attention_efficiency

    def memory(self) -> float:
        return self.memory_efficiency

    def elementwise(self) -> float:
        return self.elementwise_efficiency

    def allreduce_time_s(self, message_bytes: float, tp: int) -> float:
        if tp <= 1:
            return 0.0
        if self.interconnect_bandwidth <= 0.0:
            raise ConfigError("tp > 1 needs hardware.interconnect_bandwidth_gbps > 0")
        link_bytes = 2.0 * (tp - 1) / tp * message_bytes
        return self.interconnect_latency_s + link_bytes / (
            self.interconnect_bandwidth * self.allreduce_efficiency
        )

    def provenance(self) -> dict[str, str]:
        return {
            name: FLAT_PROVENANCE
            for name in (
                "gemm",
                "attention_prefill",
                "attention_decode",
                "memory",
                "elementwise",
                "allreduce_time_s",
            )
        }
