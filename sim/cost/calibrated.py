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

Hardware we have no measurements for borrows the fitted fractions of the nearest calibrated GPU
(`sim.cost.profiles`): the curves stay, the datasheet peaks and bandwidth change, so decode
follows the new bandwidth and prefill the new FLOP/s; fixed costs scale with the clock.

An FP8 KV cache has curves of its own where they were measured (`attention_*_fp8kv`): the
measured kernel reads FP8 and computes in 16-bit, so they are fractions of the bf16 peak.
TP sizes without a measured all-reduce curve extend the largest measured one below them by
NCCL's ring algorithm (`sim.cost.efficiency.RingExtrapolation`).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from sim.cost.efficiency import KernelTime, RingExtrapolation, ring_allreduce_time_s, tensor_peak_flops
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


def _curve(raw: Mapping[str, Any] | None) -> AttentionCurve | None:
    return AttentionCurve(**raw) if raw else None


@dataclass(frozen=True, slots=True)
class Profile:
    """Fitted parameters of one GPU (written by `python -m sim.calibrate.profile_fit`).

    Keys of the JSON file this does not know (an `engine` section, say) are ignored."""

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
    attention_prefill_fp8kv: AttentionCurve | None = None
    attention_decode_fp8kv: AttentionCurve | None = None
    fp8kv_measured_on: str = ""
    allreduce_extrapolation: RingExtrapolation | None = None
    boost_clock_mhz: float = 0.0  # of the calibrated GPU: fixed costs are cycles of it
    validation: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Profile:
        try:
            check_profile_values(raw)
            ext = raw.get("allreduce_extrapolation")
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
                attention_prefill_fp8kv=_curve(raw.get("attention_prefill_fp8kv")),
                attention_decode_fp8kv=_curve(raw.get("attention_decode_fp8kv")),
                fp8kv_measured_on=raw.get("fp8kv_measured_on", ""),
                allreduce_extrapolation=RingExtrapolation(ext["hop_latency_s"], ext["ring_bandwidth"]) if ext else None,
                boost_clock_mhz=float(raw.get("boost_clock_mhz", 0.0)),
                validation=dict(raw.get("validation", {})),
            )
        except (KeyError, TypeError) as err:
            raise ConfigError(
                f"hardware profile is malformed ({err}); refit it with python -m sim.calibrate.profile_fit"
            ) from None

    def with_fixed_scale(self, scale: float) -> Profile:
        """The same profile with every fixed cost multiplied by `scale` (a clock ratio)."""
        if scale == 1.0:
            return self

        def fixed(c):
            return dataclasses.replace(c, fixed_s=c.fixed_s * scale) if c is not None else None

        return dataclasses.replace(
            self,
            gemm={dt: fixed(c) for dt, c in self.gemm.items()},
            attention_prefill=fixed(self.attention_prefill),
            attention_decode=fixed(self.attention_decode),
            attention_prefill_fp8kv=fixed(self.attention_prefill_fp8kv),
            attention_decode_fp8kv=fixed(self.attention_decode_fp8kv),
            elementwise_fixed_s=self.elementwise_fixed_s * scale,
        )


def allreduce_time_s(
    curves: Mapping[int, AllreduceFit], ring: RingExtrapolation | None, message_bytes: float, tp: int
) -> float | None:
    """Time on the measured curve of `tp`, or extrapolated from the largest measured group below
    it; never less than a smaller measured group at the same size. None when nothing fits."""
    below = [n for n in curves if n <= tp]
    if not below:
        return None
    anchor = max(below)
    t = curves[anchor].time_s(message_bytes, anchor)
    if anchor != tp:
        if ring is None:
            return None
        t += ring.increment_s(message_bytes, anchor, tp)
    smaller = [curves[n].time_s(message_bytes, n) for n in below if n < anchor]
    if anchor == tp and smaller and ring is not None:
        # An unmeasured size between the next smaller measured group and this one is
        # extrapolated upward from that group; a measured curve must not undercut it either.
        lower = max(n for n in below if n < anchor)
        if lower < tp - 1:
            smaller.append(curves[lower].time_s(message_bytes, lower) + ring.increment_s(message_bytes, lower, tp - 1))
    return max([t, *smaller])


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
        fp8kv: tuple[AttentionCurve, AttentionCurve] | None = None,
    ) -> None:
        """`fp8kv`: (prefill, decode) curves of an FP8 KV cache borrowed from another profile
        when `profile` has none; without either, an FP8 cache is priced on the bf16 curves."""
        self.profile = profile
        own = (profile.attention_prefill_fp8kv, profile.attention_decode_fp8kv)
        self._fp8kv = own if own[0] is not None and own[1] is not None else fp8kv
        self.hardware = hardware
        self.q_heads = q_heads
        self.kv_heads = kv_heads
        self._provenance = provenance
        self._bw = hardware.memory_bandwidth
        self._fallback_allreduce = fallback_allreduce
        # (dtype, num_seqs) -> decode attention's curve and its two rates (attention_decode)
        self._decode_roofs: dict[tuple[str, int], tuple[AttentionCurve, float, float]] = {}

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
        c, dtype = self._attention_curve(0, dtype)
        q = num_tokens / num_seqs if num_seqs else float(num_tokens)
        eff = c.compute_efficiency * q / (q + c.half)
        compute_s = flops / (tensor_peak_flops(self.hardware.peak_flops, dtype) * eff)
        memory_s = nbytes / (self._bw * c.memory_efficiency)
        return KernelTime(compute_s, memory_s, c.fixed_s + smoothmax(compute_s, memory_s, c.ridge_p))

    def attention_decode(
        self, flops: float, nbytes: float, num_seqs: int, context_tokens: int, dtype: str
    ) -> KernelTime:
        # Called at every step: the roofs depend on the dtype and the batch size only, so they
        # are kept per (dtype, num_seqs); the figures are the same floats as computed afresh.
        key = (dtype, num_seqs)
        roofs = self._decode_roofs.get(key)
        if roofs is None:
            c, peak_dtype = self._attention_curve(1, dtype)
            pairs = num_seqs * self.kv_heads
            eff = c.memory_efficiency * pairs / (pairs + c.half)
            compute_rate = tensor_peak_flops(self.hardware.peak_flops, peak_dtype) * c.compute_efficiency
            roofs = self._decode_roofs[key] = (c, compute_rate, self._bw * eff)
        c, compute_rate, memory_rate = roofs
        compute_s = flops / compute_rate
        memory_s = nbytes / memory_rate
        return KernelTime(compute_s, memory_s, c.fixed_s + smoothmax(compute_s, memory_s, c.ridge_p))

    def _attention_curve(self, decode: int, dtype: str) -> tuple[AttentionCurve, str]:
        """The curve and the tensor rate it is a fraction of. An FP8 cache's measured kernel
        dequantises and runs 16-bit products: its curves are fractions of the bf16 peak.
        DIVERGENCE: that kernel is of vLLM's TRITON_ATTN design (vllm/v1/attention/ops/
        triton_unified_attention.py); vLLM's default on Hopper, FlashAttention-3's FP8 path,
        was not measured (docs/DIVERGENCES.md)."""
        if dtype == "fp8" and self._fp8kv is not None:
            return self._fp8kv[decode], "bf16"
        return (self.profile.attention_decode if decode else self.profile.attention_prefill), dtype

    def elementwise(self, flops: float, nbytes: float, num_tokens: int) -> KernelTime:
        memory_s = nbytes / (self._bw * self.profile.elementwise_memory_efficiency)
        return KernelTime(0.0, memory_s, self.profile.elementwise_fixed_s + memory_s)

    def allreduce_time_s(self, message_bytes: float, tp: int) -> float:
        if tp <= 1:
            return 0.0
        if self.hardware.interconnect == self.profile.interconnect:
            t = allreduce_time_s(
                self.profile.allreduce, self.profile.allreduce_extrapolation, message_bytes, tp
            )
            if t is not None:
                return t
        return self._fallback_allreduce.time_s(message_bytes, tp)

    def provenance(self) -> dict[str, str]:
        return dict(self._provenance)


# What each fitted figure may be: a bad profile is refused when loaded, naming the value.
_POSITIVE = ("ridge_p", "half", "bus_bandwidth", "ring_bandwidth", "tile_m")
_NON_NEGATIVE = ("fixed_s", "latency_s", "hop_latency_s", "boost_clock_mhz")


def check_profile_values(raw: Mapping[str, Any]) -> None:
    """Every fitted number of a profile is finite and in its range: efficiencies in (0, 1]
    (fractions of the datasheet roofs), fixed costs and latencies >= 0, sizes and bandwidths
    > 0. A ConfigError names the first value that is not."""

    def walk(node: Any, path: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if path == "" and key in ("validation", "fit_errors", "sources"):
                    continue  # reports, not parameters
                walk(value, f"{path}.{key}" if path else str(key))
            return
        if isinstance(node, bool) or not isinstance(node, (int, float)):
            return
        name = path.rsplit(".", 1)[-1]
        bad = not math.isfinite(node)
        if name.endswith("efficiency"):
            bad = bad or not 0.0 < node <= 1.0
        elif name in _POSITIVE:
            bad = bad or node <= 0
        elif name in _NON_NEGATIVE:
            bad = bad or node < 0
        if bad:
            raise ConfigError(
                f"hardware profile value {path}={node} is out of range (efficiencies in (0, 1],"
                " fixed costs and latencies >= 0, sizes and bandwidths > 0); refit it with"
                " python -m sim.calibrate.profile_fit"
            )

    walk(raw, "")
