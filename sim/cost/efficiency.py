"""How long each kind of kernel takes, given its FLOPs and bytes.

The operator accounting (`operators.py`) counts FLOPs and bytes exactly; everything it cannot
count (tile padding, wave tails, launch gaps, the ridge between the two roofs, poor parallelism
of small kernels) lives here. An `EfficiencyModel` prices one kernel of one layer as a
`KernelTime`: the time at the compute roof, the time at the memory roof (both after the
efficiency factors), and the time it takes, which is at least the larger of the two.

`FlatEfficiency` is the first model: one constant per kernel kind from `CostSpec`, time =
max(compute, memory). `sim.cost.calibrated.CalibratedEfficiency` fits curves to measurements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

from sim.errors import ConfigError
from sim.hardware_spec import HardwareSpec

if TYPE_CHECKING:
    from sim.cost.cost_spec import CostSpec

FLAT_PROVENANCE = "default: flat factor from the cost config (not calibrated)"
# Assumed median step error of the flat factors: they measured 14-18% median on H100/H200
# (analysis/validate_step_model.py --flat); on other GPUs nothing was measured.
FLAT_ERROR = 0.20
FLAT_COST_SOURCE = f"flat factors, not calibrated (step error ~{FLAT_ERROR:.0%} median, assumed, not measured)"
EFFICIENCY_KINDS = (
    "gemm",
    "attention_prefill",
    "attention_decode",
    "elementwise",
    "allreduce",
)


class KernelTime(NamedTuple):
    compute_s: float  # FLOPs at the efficiency-scaled compute roof
    memory_s: float  # bytes at the efficiency-scaled bandwidth roof
    time_s: float  # what the kernel takes: >= max(compute_s, memory_s)


class EfficiencyModel(Protocol):
    """Prices one kernel of one layer. `gemm` and `elementwise` are memoised by the cost model
    (they may be slow); the attention methods run once per step (keep them cheap)."""

    def gemm(self, m: int, n: int, k: int, dtype: str, flops: float, nbytes: float) -> KernelTime:
        """An (m x k) @ (k x n) GEMM whose tensor cores run at the `dtype` rate."""
        ...

    def attention_prefill(
        self, flops: float, nbytes: float, num_tokens: int, num_seqs: int, dtype: str
    ) -> KernelTime:
        """Causal attention of `num_tokens` new queries over `num_seqs` sequences."""
        ...

    def attention_decode(
        self, flops: float, nbytes: float, num_seqs: int, context_tokens: int, dtype: str
    ) -> KernelTime:
        """One query per sequence over `context_tokens` cached keys in total."""
        ...

    def elementwise(self, flops: float, nbytes: float, num_tokens: int) -> KernelTime:
        """One layer's element-wise kernels (norms, RoPE, activation) over `num_tokens` rows."""
        ...

    def allreduce_time_s(self, message_bytes: float, tp: int) -> float:
        """Wall time of one all-reduce of `message_bytes` across `tp` GPUs (0 when tp == 1)."""
        ...

    def provenance(self) -> dict[str, str]:
        """Where each kind's figures came from, keyed by EFFICIENCY_KINDS, for the manifest."""
        ...


def tensor_peak_flops(peaks: dict[str, float], dtype: str) -> float:
    """Dense tensor-core FLOP/s for `dtype`; bf16 and fp16 run at the same rate, so a
    datasheet that lists one serves for the other."""
    peak = peaks.get(dtype, 0.0)
    if peak <= 0.0 and dtype in ("bf16", "fp16"):
        peak = peaks.get("fp16" if dtype == "bf16" else "bf16", 0.0)
    if peak <= 0.0:
        raise ConfigError(f"the hardware lists no {dtype} peak FLOP/s")
    return peak


def roof(compute_s: float, memory_s: float) -> KernelTime:
    return KernelTime(compute_s, memory_s, compute_s if compute_s > memory_s else memory_s)


def ring_allreduce_time_s(
    message_bytes: float, tp: int, latency_s: float, bus_bandwidth: float
) -> float:
    """A ring all-reduce moves 2 (tp - 1) / tp of the message through each GPU's link
    (reduce-scatter, then all-gather) after a latency term; `bus_bandwidth` is the per-GPU
    link rate it sustains (NCCL's "bus bandwidth")."""
    if tp <= 1:
        return 0.0
    if bus_bandwidth <= 0.0:
        raise ConfigError("tp > 1 needs hardware.interconnect_bandwidth_gbps > 0")
    return latency_s + 2.0 * (tp - 1) / tp * message_bytes / bus_bandwidth


@dataclass(frozen=True, slots=True)
class RingExtrapolation:
    """All-reduce time of a TP group with no measured curve, from the curve of the largest
    measured group below it (`anchor`), by NCCL's ring algorithm.

    A ring all-reduce of n GPUs is a reduce-scatter then an all-gather: 2 (n - 1) steps, each
    one hop of latency `hop_latency_s`, and each GPU sends 2 (n - 1) / n of the message
    (nccl-tests, doc/PERFORMANCE.md: busbw = algbw x 2 (n - 1) / n for AllReduce). Growing
    the group from a to n therefore adds

        2 (n - a) hop_latency_s + (2 (n - 1) / n - 2 (a - 1) / a) S / ring_bandwidth

    to the measured time of a at message size S. The measured curve keeps NCCL's protocol
    switches (LL, LL128, Simple) and fixed launch cost; only the increment is modelled, and it
    is positive, so a larger group is never cheaper. NCCL's tree (log2 n hops) is built
    across nodes with a chain inside each node, so inside one NVLink node NCCL's choice is
    the ring (NCCL 2.4 release notes, "double binary trees"; NVLS, the NVSwitch multicast
    algorithm, is off in the measurements); a TP group spans one node here.
    """

    hop_latency_s: float
    ring_bandwidth: float  # bytes/s through one GPU per ring step (NCCL's bus bandwidth)

    def increment_s(self, message_bytes: float, anchor_tp: int, tp: int) -> float:
        hops = 2.0 * (tp - anchor_tp) * self.hop_latency_s
        share = 2.0 * (tp - 1) / tp - 2.0 * (anchor_tp - 1) / anchor_tp
        return hops + share * message_bytes / self.ring_bandwidth

    def formula(self, anchor_tp: int, tp: int) -> str:
        share = 2.0 * (tp - 1) / tp - 2.0 * (anchor_tp - 1) / anchor_tp
        return (
            f"t{tp}(S) = t{anchor_tp}(S) + {2 * (tp - anchor_tp)} x {self.hop_latency_s * 1e6:.2f} us"
            f" + {share:.3g} x S / {self.ring_bandwidth / 1e9:.0f} GB/s"
        )


@dataclass(frozen=True, slots=True)
class FlatEfficiency:
    """One constant per kernel kind, time = max(compute, memory) with no fixed costs."""

    peak_flops: dict[str, float]  # tensor FLOP/s per dtype
    vector_flops: float
    memory_bandwidth: float
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
    def from_config(cls, cost_cfg: CostSpec, hardware: HardwareSpec) -> FlatEfficiency:
        return cls(
            peak_flops=hardware.peak_flops,
            vector_flops=hardware.vector_flops,
            memory_bandwidth=hardware.memory_bandwidth,
            gemm_efficiency=cost_cfg.gemm_efficiency,
            attention_efficiency=cost_cfg.attention_efficiency,
            memory_efficiency=cost_cfg.memory_efficiency,
            elementwise_efficiency=cost_cfg.elementwise_efficiency,
            allreduce_efficiency=cost_cfg.allreduce_efficiency,
            interconnect_bandwidth=hardware.interconnect_bandwidth,
            interconnect_latency_s=hardware.interconnect_latency_s,
        )

    def _memory_s(self, nbytes: float) -> float:
        return nbytes / (self.memory_bandwidth * self.memory_efficiency)

    def gemm(self, m: int, n: int, k: int, dtype: str, flops: float, nbytes: float) -> KernelTime:
        peak = tensor_peak_flops(self.peak_flops, dtype)
        return roof(flops / (peak * self.gemm_efficiency), self._memory_s(nbytes))

    def _attention(self, flops: float, nbytes: float, dtype: str) -> KernelTime:
        peak = tensor_peak_flops(self.peak_flops, dtype)
        return roof(flops / (peak * self.attention_efficiency), self._memory_s(nbytes))

    def attention_prefill(
        self, flops: float, nbytes: float, num_tokens: int, num_seqs: int, dtype: str
    ) -> KernelTime:
        return self._attention(flops, nbytes, dtype)

    def attention_decode(
        self, flops: float, nbytes: float, num_seqs: int, context_tokens: int, dtype: str
    ) -> KernelTime:
        return self._attention(flops, nbytes, dtype)

    def elementwise(self, flops: float, nbytes: float, num_tokens: int) -> KernelTime:
        vector = self.vector_flops * self.elementwise_efficiency
        return roof(
            flops / vector if vector > 0.0 else 0.0,
            nbytes / (self.memory_bandwidth * self.elementwise_efficiency),
        )

    def allreduce_time_s(self, message_bytes: float, tp: int) -> float:
        return ring_allreduce_time_s(
            message_bytes,
            tp,
            self.interconnect_latency_s,
            self.interconnect_bandwidth * self.allreduce_efficiency,
        )

    def provenance(self) -> dict[str, str]:
        return {**{kind: FLAT_PROVENANCE for kind in EFFICIENCY_KINDS}, "cost_model": FLAT_COST_SOURCE}
