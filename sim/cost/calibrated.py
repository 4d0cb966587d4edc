"""Kernel times from curves fitted to measurements of a real GPU (a hardware profile).

Every curve keeps the roofline's two terms and adds what the flat model misses:

    time = fixed + smoothmax_p(compute_s, memory_s),  smoothmax_p(a, b) = (a^p + b^p)^(1/p)

- `fixed`: the cost of a kernel that does nothing (launch gaps inside a CUDA graph, prologue,
  wave tails); it dominates small decode kernels.
- smoothmax: real kernels are slower than either roof near the ridge, where neither the tensor
  cores nor the memory system are saturated; p -> infinity is the plain max.
- GEMM compute time counts the rows padded to the tensor-core tile (`tile_m`): a 1-row GEMM
  costs the compute of a full tile.
- Attention: prefill compute efficiency rises with the query length per sequence (short
  chunks waste tiles); decode bandwidth efficiency rises with the number of (sequence, KV
  head) pairs that the kernel can spread over the SMs: `eff = max * u / (u + u_half)`.

Hardware we have no measurements for borrows the fitted fractions of a GPU of its generation
(`sim.cost.profiles`): the curves stay, the datasheet peaks and bandwidth change, so decode
follows the new bandwidth and prefill the new FLOP/s.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any, Mapping

from sim.cost.efficiency import KernelTime, ring_allreduce_time_s, tensor_peak_flops
from sim.errors import ConfigError
from sim.hardware_spec import HardwareSpec


def smoothmax(a: float, b: float, p: float) -> float:
    if a <= 0.0:
        return b
    if b <= 0.0:
        return a
    hi, lo = (a, b) if a >= b else (b, a)
    return hi * (1.0 + (lo / hi) ** p) ** (1.0 / p)


@dataclass(frozen=True, slots=True)
class GemmCurve:
    fixed_s: float
    compute_efficiency: float
    memory_efficiency: float
    tile_m: int
    ridge_p: float

    def time(self, m: int, flops: float, nbytes: float, peak: float, bw: float) -> KernelTime:
        padded = -(-m // self.tile_m) * self.tile_m
        compute_s = flops * (padded / m) / (peak * self.compute_efficiency)
        memory_s = nbytes / (bw * self.memory_efficiency)
        return KernelTime(compute_s, memory_s, self.fixed_s + smoothmax(compute_s, memory_s, self.ridge_p))


@dataclass(frozen=True, slots=True)
class AttentionCurve:
    fixed_s: float
    compute_efficiency: float  # at long queries (prefill) / full occupancy
    memory_efficiency: float
    half: float  # prefill: query tokens per sequence at half efficiency; decode: (seq, KV head) pairs
    ridge_p: float


@dataclass(frozen=True, slots=True)
class AllreduceFit:
    """Latency plus ring traffic, and the measured curve itself where there is one.

    NCCL switches algorithms and protocols with the message size, which no two-parameter line
    follows; inside the measured range the time is interpolated log-log between measured
    points, outside it the fitted line extends the curve.
    """

    latency_s: float
    bus_bandwidth: float  # bytes/s per GPU
    measured_bytes: tuple[float, ...] = ()
    measured_s: tuple[float, ...] = ()

    def time_s(self, message_bytes: float, tp: int) -> float:
        sizes = self.measured_bytes
        if sizes and sizes[0] <= message_bytes <= sizes[-1]:
            i = bisect.bisect_left(sizes, message_bytes)
            if sizes[i] == message_bytes:
                return self.measured_s[i]
            x0, x1 = math.log(sizes[i - 1]), math.log(sizes[i])
            y0, y1 = math.log(self.measured_s[i - 1]), math.log(self.measured_s[i])
            return math.exp(y0 + (y1 - y0) * (math.log(message_bytes) - x0) / (x1 - x0))
        return ring_allreduce_time_s(message_bytes, tp, self.latency_s, self.bus_bandwidth)


@dataclass(frozen=True, slots=True)
class Profile:
    """Fitted parameters of one GPU (see calibration/fit_profile.py)."""

    hardware: str
    generation: str
    interconnect: str
    gemm: dict[str, GemmCurve]  # by compute dtype
    attention_prefill: AttentionCurve
    attention_decode: AttentionCurve
    elementwise_fixed_s: float
    elementwise_memory_efficiency: float
    allreduce: dict[int, AllreduceFit]  # by TP size
    allreduce_measured_on: str  # the machine the all-reduce curves come from
    measured_on: str
    sources: tuple[str, ...]

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Profile:
        try:
            return cls(
                hardware=raw["hardware"],
                generation=raw["generation"],
                interconnect=raw["interconnect"],
                gemm={dt: GemmCurve(**c) for dt, c in raw["gemm"].items()},
                attention_prefill=AttentionCurve(**raw["attention_prefill"]),
                attention_decode=AttentionCurve(**raw["attention_decode"]),
                elementwise_fixed_s=raw["elementwise"]["fixed_s"],
                elementwise_memory_efficiency=raw["elementwise"]["memory_efficiency"],
                allreduce={
                    int(tp): AllreduceFit(
                        f["latency_s"],
                        f["bus_bandwidth"],
                        tuple(f.get("measured_bytes", ())),
                        tuple(f.get("measured_s", ())),
                    )
                    for tp, f in raw.get("allreduce", {}).items()
                },
                allreduce_measured_on=raw.get("allreduce_measured_on", ""),
                measured_on=raw.get("measured_on", ""),
                sources=tuple(raw.get("sources", ())),
            )
        except (KeyError, TypeError) as err:
            raise ConfigError(f"hardware profile is malformed ({err}); re-run calibration/fit_profile.py") from None


class CalibratedEfficiency:
    """An `EfficiencyModel` from a fitted profile, on `hardware`'s datasheet roofs.

    `q_heads` and `kv_heads` are the attention heads on one GPU of the TP group: decode
    attention spreads (sequence, KV head) pairs over the SMs.
    """

    def __init__(
        self,
        profile: Profile,
        hardware: HardwareSpec,
        q_heads: int,
        kv_heads: int,
        provenance: dict[str, str],
        fallback_allreduce: AllreduceFit,
    ) -> None:
        self.profile = profile
        self.hardware = hardware
        self.q_heads = q_heads
        self.kv_heads = kv_heads
        self._provenance = provenance
        self._bw = hardware.memory_bandwidth
        self._fallback_allreduce = fallback_allreduce

    def _gemm_curve(self, dtype: str) -> GemmCurve:
        curve = self.profile.gemm.get(dtype)
        if curve is None:  # a dtype the profile has no sweep of: the bf16 fractions
            curve = self.profile.gemm["bf16"]
        return curve

    def gemm(self, m: int, n: int, k: int, dtype: str, flops: float, nbytes: float) -> KernelTime:
        peak = tensor_peak_flops(self.hardware.peak_flops, dtype)
        return self._gemm_curve(dtype).time(m, flops, nbytes, peak, self._bw)

    def attention_prefill(
        self, flops: float, nbytes: float, num_tokens: int, num_seqs: int, dtype: str
    ) -> KernelTime:
        c = self.profile.attention_prefill
        q = num_tokens / num_seqs if num_seqs else float(num_tokens)
        eff = c.compute_efficiency * q / (q + c.half)
        compute_s = flops / (tensor_peak_flops(self.hardware.peak_flops, dtype) * eff)
        memory_s = nbytes / (self._bw * c.memory_efficiency)
        return KernelTime(compute_s, memory_s, c.fixed_s + smoothmax(compute_s, memory_s, c.ridge_p))

    def attention_decode(
        self, flops: float, nbytes: float, num_seqs: int, context_tokens: int, dtype: str
    ) -> KernelTime:
        c = self.profile.attention_decode
        pairs = num_seqs * self.kv_heads
        eff = c.memory_efficiency * pairs / (pairs + c.half)
        compute_s = flops / (tensor_peak_flops(self.hardware.peak_flops, dtype) * c.compute_efficiency)
        memory_s = nbytes / (self._bw * eff)
        return KernelTime(compute_s, memory_s, c.fixed_s + smoothmax(compute_s, memory_s, c.ridge_p))

    def elementwise(self, flops: float, nbytes: float, num_tokens: int) -> KernelTime:
        memory_s = nbytes / (self._bw * self.profile.elementwise_memory_efficiency)
        return KernelTime(0.0, memory_s, self.profile.elementwise_fixed_s + memory_s)

    def allreduce_time_s(self, message_bytes: float, tp: int) -> float:
        if tp <= 1:
            return 0.0
        fit = self.profile.allreduce.get(tp)
        if fit is None or self.hardware.interconnect != self.profile.interconnect:
            fit = self._fallback_allreduce
        return fit.time_s(message_bytes, tp)

    def provenance(self) -> dict[str, str]:
        return dict(self._provenance)
