"""Datasheet figures of one accelerator, as the cost model and memory planner see them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class HardwareSpec:
    """Dense peaks (no sparsity) in FLOP/s and bytes/s, memory in bytes."""

    name: str
    peak_flops: dict[str, float]  # per compute dtype ("bf16", "fp8", "int8", "fp4"), FLOP/s
    vector_flops: float  # non-tensor fp32 FLOP/s
    memory_bytes: float  # HBM capacity as CUDA reports it, bytes
    memory_bandwidth: float  # bytes/s
    interconnect: str
    interconnect_bandwidth: float  # per GPU, one direction, bytes/s
    interconnect_latency_s: float
    max_gpus_per_node: int = 8
    nics_per_node: int = 0  # scale-out NICs of one node (0: no network between nodes)
    nic_bandwidth: float = 0.0  # per NIC, one direction, bytes/s
    nic_latency_s: float = 0.0  # one inter-node hop
    tdp_w: float = 0.0
    idle_power_w: float = 0.0
    price_per_hour_usd: float = 0.0
    boost_clock_mhz: float = 0.0
    sustained_clock_ratio: float = 1.0  # already applied to peak_flops and vector_flops
    generation: str = ""
    display_name: str = ""
    source: str = field(default="", compare=False)
    memory_source: str = field(default="", compare=False)  # where memory_bytes comes from

    def supports(self, dtype: str) -> bool:
        """Whether the matrix units have a rate for `dtype` (fp8 on Hopper, not on Ampere)."""
        return self.peak_flops.get(dtype, 0.0) > 0.0

    @property
    def supported_dtypes(self) -> tuple[str, ...]:
        """Compute dtypes with a tensor-core rate, for messages that say what would work."""
        return tuple(dtype for dtype, flops in self.peak_flops.items() if flops > 0.0)
