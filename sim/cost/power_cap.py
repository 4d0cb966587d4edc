"""Clocks at the power limit: a cost model wrapper that slows compute-bound work when a step's
power would exceed the board's limit.

A GPU whose power would exceed its limit lowers its SM clock f until it fits. Compute-bound
kernels slow with the clock; HBM-bound ones do not (HBM has its own clock, 3201 MHz on the
H200 in every nvidia-smi sample, capped or not). With the power model of `sim.economics` and
its measured clock exponent alpha (dynamic compute power ~ f^alpha at fixed work per cycle, so
energy per FLOP ~ f^(alpha-1)), a step of FLOPs F and bytes B whose compute-bound operators
take `c` seconds at the clock f_ref they are referred to, and everything else `o` seconds
(memory-bound and latency-bound operators, CPU overhead), runs at x = f / f_boost with

    d(x) = c f_ref / (x f_boost) + o
    P(x) = P_idle + (TDP - P_idle) (w_c x^(alpha-1) F / (d(x) peak) + w_m B / (d(x) bw))

and x = 1 if P(1) <= limit, else the root of P(x) = limit. Compute-bound operators then take
f_ref / f times longer (shorter, when f > f_ref), the others the same.

What f_ref is decides whether the cap is counted twice. The calibrated profiles were fitted to
steps measured back to back at the 700 W limit (calibration/data/*_steps.csv record each
step's SM clock): H100 prefill ran at 1410-1755 MHz and H200 prefill at 1560-1635 MHz, boost
1980; long-context decode throttled to 1440-1500 MHz on the H200. A profile's compute-bound
times therefore already hold the cap's slowdown of each shape, at the limit of the GPU it was
measured on. So for a calibrated profile f_ref is, per step, the clock this model gives the
step at the GPU's default limit, its TDP (`reference_limit_w`), and only the difference to the
run's limit is applied: an H200 run at 700 W is unchanged (off_4k_64 stays where it matched
vLLM), a lowered limit (`limit_w=500`, what `nvidia-smi -pl 500` does) slows compute-bound
steps. A transferred profile (the H100's on the H200) keeps its fractions of the peaks, so its
steps have the same utilisations on both GPUs; with the power weights as shares of each GPU's
own TDP (sim.economics) they then throttle to the same fraction of boost at TDP. The data
agree: regressing vLLM's logged step times on the profile's compute-bound time, the fit is
best with no extra boost/f factor (residual rms per 1-s bin 45.7 ms with none, 60.9 ms with
boost/f on the measured clock; `python -m sim.calibrate.power_check --step-times`). A model whose compute times assume a fixed
clock (the flat factors: datasheet peaks at boost times `sustained_clock_ratio`) is referred
to that clock instead, and then the cap slows its compute-bound steps in full.

Per step this is a memoised function of the batch: the wrapped model's price of a batch never
changes, so neither does its clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sim.cost.batch import BatchSummary
from sim.cost.breakdown import BOUND_COMPUTE, StepCost
from sim.economics import CLOCK_EXPONENT, PowerModel, power_source
from sim.errors import ConfigError
from sim.hardware_spec import HardwareSpec

MEMO_LIMIT = 1 << 16  # batches remembered; decode contexts grow, so old keys seldom recur
MIN_CLOCK = 0.05  # of boost: a floor for the solve, far below any clock a GPU is held at


@dataclass(frozen=True, slots=True)
class ClockModel:
    """The SM clock (as a fraction x of boost) at which a step's power meets a limit."""

    power: PowerModel
    clock_exponent: float = CLOCK_EXPONENT

    def power_w(self, flops: float, bytes_: float, compute_s: float, other_s: float, x_ref: float, x: float) -> float:
        """Power of the step at clock x when its compute-bound part takes `compute_s` at x_ref."""
        p = self.power
        duration = max(compute_s * x_ref / x + other_s, 1e-30)
        activity = (p.compute_weight * flops * x ** (self.clock_exponent - 1.0) / p.peak_flops
                    + p.memory_weight * bytes_ / p.memory_bandwidth) / duration  # floats: hot path
        return p.idle_w + p.dynamic_w * activity

    def clock(self, flops: float, bytes_: float, compute_s: float, other_s: float, x_ref: float, limit_w: float) -> float:
        """x in (0, 1]: 1 when the step fits under `limit_w` at boost, else the root of
        P(x) = limit. Multiplied by d(x), the equation is g(x) = A x^alpha + M x - L (c + o x)
        with g(0) < 0 and g convex for alpha >= 1, so Newton's method from x = 1 (where g > 0)
        descends monotonically onto the root."""
        if self.power_w(flops, bytes_, compute_s, other_s, x_ref, 1.0) <= limit_w:
            return 1.0
        p, alpha = self.power, self.clock_exponent
        a = p.dynamic_w * p.compute_weight * flops / p.peak_flops
        m = p.dynamic_w * p.memory_weight * bytes_ / p.memory_bandwidth
        budget = limit_w - p.idle_w
        if budget <= 0.0:
            raise ConfigError(f"a power limit of {limit_w:.0f} W leaves nothing above the {p.idle_w:.0f} W idle power")
        c, o = compute_s * x_ref, other_s
        x = 1.0
        for _ in range(50):
            g = a * x**alpha + m * x - budget * (c + o * x)
            slope = alpha * a * x ** (alpha - 1.0) + m - budget * o
            if slope <= 0.0:
                break
            step = g / slope
            x -= step
            if x <= MIN_CLOCK:
                return MIN_CLOCK
            if abs(step) < 1e-9:
                break
        return x

    def clock_at_own_durations(self, flops: float, bytes_: float, duration_s: float, limit_w: float) -> float:
        """The clock a step measured to take `duration_s` ran at under `limit_w`: its FLOP and
        byte rates are fixed by the measurement, only the energy per FLOP follows the clock."""
        p = self.power
        if duration_s <= 0.0 or flops <= 0.0:
            return 1.0
        compute_w = p.dynamic_w * p.compute_weight * flops / (duration_s * p.peak_flops)
        memory_w = p.dynamic_w * p.memory_weight * bytes_ / (duration_s * p.memory_bandwidth)
        room = limit_w - p.idle_w - memory_w
        if room >= compute_w:
            return 1.0
        if room <= 0.0:
            return MIN_CLOCK
        return max((room / compute_w) ** (1.0 / (self.clock_exponent - 1.0)), MIN_CLOCK)


@dataclass(frozen=True, slots=True)
class CappedStep:
    """A step's price under the limit, its SM clock (MHz) and board power (W)."""

    cost: StepCost
    clock_mhz: float
    power_w: float


class PowerCappedCostModel:
    """Wraps a cost model (anything with `step_cost(batch) -> StepCost`): compute-bound
    operators of a step that would exceed `limit_w` at boost take boost/f longer.

    `reference_limit_w` set: the wrapped model's compute times already hold the clock of each
    step at that limit (a profile calibrated at it), and only the difference is applied.
    Otherwise they are referred to the fixed clock `reference_clock_mhz`.
    """

    def __init__(
        self,
        inner: Any,
        clock_model: ClockModel,
        boost_clock_mhz: float,
        limit_w: float,
        reference_limit_w: float | None = None,
        reference_clock_mhz: float | None = None,
    ) -> None:
        if boost_clock_mhz <= 0.0:
            raise ConfigError("the power cap needs the GPU's boost_clock_mhz (hardware config)")
        if limit_w <= clock_model.power.idle_w:
            raise ConfigError(
                f"power limit {limit_w:.0f} W must exceed the idle power {clock_model.power.idle_w:.0f} W"
            )
        if (reference_limit_w is None) == (reference_clock_mhz is None):
            raise ConfigError("give exactly one of reference_limit_w and reference_clock_mhz")
        self.inner = inner
        self.clock_model = clock_model
        self.boost_clock_mhz = boost_clock_mhz
        self.limit_w = limit_w
        self.reference_limit_w = reference_limit_w
        self.reference_clock_mhz = reference_clock_mhz
        self._memo: dict[BatchSummary, CappedStep] = {}

    @classmethod
    def from_specs(
        cls, inner: Any, hardware: HardwareSpec, peak_flops: float, limit_w: float | None = None
    ) -> PowerCappedCostModel:
        """The wrapper a run uses: `hardware`'s power model (sim.economics) at `peak_flops`
        (the run's compute dtype), its TDP as the limit unless `limit_w` (a lowered power
        limit: `nvidia-smi -pl`), and the reference the wrapped model implies: a calibrated
        profile was measured at its GPU's default limit, the TDP (the calibration CSVs record
        power_limit_w 700.00); anything else is referred to boost x sustained_clock_ratio."""
        if hardware.tdp_w <= 0.0:
            raise ConfigError(f"hardware {hardware.name} has no tdp_w: the power cap needs it")
        power = PowerModel(hardware.idle_power_w, hardware.tdp_w, peak_flops, hardware.memory_bandwidth)
        profile = getattr(getattr(inner, "efficiency", None), "profile", None)
        if profile is not None:
            return cls(inner, ClockModel(power), hardware.boost_clock_mhz, limit_w or hardware.tdp_w,
                       reference_limit_w=hardware.tdp_w)
        return cls(inner, ClockModel(power), hardware.boost_clock_mhz, limit_w or hardware.tdp_w,
                   reference_clock_mhz=hardware.boost_clock_mhz * hardware.sustained_clock_ratio)

    def step_cost(self, batch: BatchSummary) -> StepCost:
        if self.reference_limit_w == self.limit_w:  # profile measured at this limit: unchanged
            return self.inner.step_cost(batch)
        return self.capped(batch).cost

    def capped(self, batch: BatchSummary) -> CappedStep:
        """The step under the limit, with its clock and power; memoised per batch."""
        hit = self._memo.get(batch)
        if hit is not None:
            return hit
        if len(self._memo) >= MEMO_LIMIT:
            self._memo.clear()
        hit = self._memo[batch] = self._cap(self.inner.step_cost(batch))
        return hit

    def _cap(self, cost: StepCost) -> CappedStep:
        compute_s = flops = nbytes = 0.0
        for op in cost.ops:  # OpCost.bound, inlined
            flops += op.flops
            nbytes += op.bytes
            if op.time_s > 0.0 and op.compute_s >= op.memory_s and op.compute_s > 0.0:
                compute_s += op.time_s
        other_s = cost.time_s - compute_s
        cm = self.clock_model
        if self.reference_limit_w is not None:
            x_ref = cm.clock_at_own_durations(flops, nbytes, cost.time_s, self.reference_limit_w)
        else:
            x_ref = self.reference_clock_mhz / self.boost_clock_mhz
        if self.reference_limit_w == self.limit_w:  # the root is x_ref itself: no slowdown
            x = x_ref
        elif compute_s > 0.0:
            x = cm.clock(flops, nbytes, compute_s, other_s, x_ref, self.limit_w)
        else:  # nothing slows with the clock; the clock still drops to hold the limit
            x = x_ref = cm.clock_at_own_durations(flops, nbytes, cost.time_s, self.limit_w)
        stretch = x_ref / x
        power = cm.power_w(flops, nbytes, compute_s, other_s, x_ref, x) if cost.time_s > 0 else cm.power.idle_w
        if stretch != 1.0 and compute_s > 0.0:
            ops = tuple(
                replace(op, time_s=op.time_s * stretch, compute_s=op.compute_s * stretch)
                if op.bound == BOUND_COMPUTE else op
                for op in cost.ops
            )
            # replace keeps a pipeline's stage times; the engine clock scales them to gpu_time_s
            cost = replace(cost, ops=ops, gpu_time_s=cost.gpu_time_s + compute_s * (stretch - 1.0))
        return CappedStep(cost, x * self.boost_clock_mhz, min(power, self.limit_w))

    def provenance(self) -> dict[str, str]:
        return self.inner.provenance()

    def assumptions(self) -> dict[str, object]:
        ref = (
            f"compute times as calibrated at the {self.reference_limit_w:.0f} W limit; the clock"
            f" difference to the run's {self.limit_w:.0f} W limit applied"
            if self.reference_limit_w is not None
            else f"compute times at {self.reference_clock_mhz:.0f} MHz, slowed to the clock that"
            f" meets the {self.limit_w:.0f} W limit"
        )
        return {**self.inner.assumptions(), "power_cap": ref, "power_model": power_source()}

    def __getattr__(self, name: str) -> Any:  # model, hardware, precision, ...: the inner model's
        if name == "inner":  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

