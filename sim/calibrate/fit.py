"""Least-squares fits of the kernel-time curves of `sim.cost.calibrated` to measurements.

Every fit minimises the relative error (residuals are log(predicted / measured)), so a 20 us
decode kernel and a 20 ms prefill weigh the same. Each returns its parameters and the fit's
own errors, which the profile records next to them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
from scipy.optimize import least_squares

from sim.calibrate.work import AttentionWork
from sim.cost.calibrated import AllreduceFit, AttentionCurve, GemmCurve, smoothmax
from sim.cost.efficiency import RingExtrapolation
from sim.cost.operators import Gemm, Work

TILE_M = 64  # wgmma/mma M tile of Hopper and Ampere tensor cores


@dataclass(frozen=True, slots=True)
class FitError:
    n: int
    median: float
    p90: float
    max: float

    @classmethod
    def of(cls, predicted: np.ndarray, measured: np.ndarray) -> FitError:
        rel = np.abs(predicted / measured - 1.0)
        return cls(int(rel.size), float(np.median(rel)), float(np.percentile(rel, 90)), float(rel.max()))

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _least_squares(
    predict: Callable[[np.ndarray], np.ndarray],
    measured: np.ndarray,
    x0: Sequence[float],
    lower: Sequence[float],
    upper: Sequence[float],
) -> np.ndarray:
    result = least_squares(
        lambda x: np.log(np.maximum(predict(x), 1e-12)) - np.log(measured),
        np.asarray(x0, float),
        bounds=(np.asarray(lower, float), np.asarray(upper, float)),
        x_scale="jac",
    )
    return result.x


# ---- GEMMs -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GemmSample:
    """Kernels measured together: `count` runs of each GEMM in `gemms`, `eager` when timed one
    launch at a time (launch cost included) rather than inside a CUDA graph."""

    gemms: tuple[Gemm, ...]
    count: int
    seconds: float
    eager: bool


def fit_gemm(
    samples: Sequence[GemmSample], peak: float, bandwidth: float
) -> tuple[GemmCurve, FitError, float]:
    """One dtype's curve; returns it (with the in-graph fixed cost), the fit error and the
    eager fixed cost (reported only). Parameters: compute and memory efficiency, ridge
    sharpness, fixed cost in a graph and when launched eagerly."""
    measured = np.array([s.seconds for s in samples])
    have_graph = any(not s.eager for s in samples)
    have_eager = any(s.eager for s in samples)

    def curve(x: np.ndarray, eager: bool) -> GemmCurve:
        fixed = x[3] if eager else x[4]
        return GemmCurve(float(fixed), float(x[0]), float(x[1]), TILE_M, float(x[2]))

    def predict(x: np.ndarray) -> np.ndarray:
        out = np.empty(len(samples))
        curves = {False: curve(x, False), True: curve(x, True)}
        for i, s in enumerate(samples):
            c = curves[s.eager]
            out[i] = s.count * sum(c.time(g.m, g.flops, g.bytes, peak, bandwidth).time_s for g in s.gemms)
        return out

    x = _least_squares(
        predict,
        measured,
        x0=[0.75, 0.85, 4.0, 10e-6 if have_eager else 0.0, 4e-6 if have_graph else 0.0],
        lower=[0.05, 0.05, 1.0, 0.0, 0.0],
        upper=[1.0, 1.0, 30.0, 2e-4 if have_eager else 1e-12, 2e-4 if have_graph else 1e-12],
    )
    graph_curve = curve(x, False) if have_graph else curve(x, True)
    return graph_curve, FitError.of(predict(x), measured), float(x[3])


# ---- attention ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttentionSample:
    work: AttentionWork  # one layer's kernel
    count: int  # layers (or repetitions) measured together
    seconds: float
    kv_heads: int  # on one GPU


def _prefill_time(c: AttentionCurve, w: AttentionWork, peak: float, bw: float) -> float:
    q = w.num_tokens / w.num_seqs
    compute_s = w.flops / (peak * c.compute_efficiency * q / (q + c.half))
    return c.fixed_s + smoothmax(compute_s, w.bytes / (bw * c.memory_efficiency), c.ridge_p)


def _decode_time(c: AttentionCurve, w: AttentionWork, kv_heads: int, peak: float, bw: float) -> float:
    pairs = w.num_seqs * kv_heads
    memory_s = w.bytes / (bw * c.memory_efficiency * pairs / (pairs + c.half))
    return c.fixed_s + smoothmax(w.flops / (peak * c.compute_efficiency), memory_s, c.ridge_p)


def fit_attention_prefill(
    samples: Sequence[AttentionSample], peak: float, bandwidth: float, half_starts: Sequence[float] = (64.0,)
) -> tuple[AttentionCurve, FitError]:
    """`half_starts`: starting points of the half-efficiency query length; the best fit wins
    (the least-squares surface has a second minimum at half -> 0 for some kernels)."""
    measured = np.array([s.seconds for s in samples])

    def curve(x: np.ndarray) -> AttentionCurve:
        return AttentionCurve(float(x[0]), float(x[1]), 0.85, float(x[2]), float(x[3]))

    def predict(x: np.ndarray) -> np.ndarray:
        c = curve(x)
        return np.array([s.count * _prefill_time(c, s.work, peak, bandwidth) for s in samples])

    fits = [
        _least_squares(predict, measured, [5e-6, 0.6, h, 4.0], [0.0, 0.05, 0.0, 1.0], [5e-4, 1.0, 1e5, 30.0])
        for h in half_starts
    ]
    x = min(fits, key=lambda x: float(np.sum(np.log(predict(x) / measured) ** 2)))
    return curve(x), FitError.of(predict(x), measured)


def fit_attention_decode(
    samples: Sequence[AttentionSample], peak: float, bandwidth: float
) -> tuple[AttentionCurve, FitError]:
    measured = np.array([s.seconds for s in samples])

    def curve(x: np.ndarray) -> AttentionCurve:
        return AttentionCurve(float(x[0]), 0.5, float(x[1]), float(x[2]), 4.0)

    def predict(x: np.ndarray) -> np.ndarray:
        c = curve(x)
        return np.array(
            [s.count * _decode_time(c, s.work, s.kv_heads, peak, bandwidth) for s in samples]
        )

    x = _least_squares(predict, measured, [5e-6, 0.8, 32.0], [0.0, 0.05, 0.0], [5e-4, 1.0, 1e5])
    return curve(x), FitError.of(predict(x), measured)


# ---- element-wise and all-reduce ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ElementwiseSample:
    layer: Work
    step: Work
    layers: int
    seconds: float


def fit_elementwise(
    samples: Sequence[ElementwiseSample], bandwidth: float
) -> tuple[float, float, FitError]:
    """(fixed cost per layer's element-wise kernels, memory efficiency, error)."""
    measured = np.array([s.seconds for s in samples])

    def predict(x: np.ndarray) -> np.ndarray:
        fixed, eff = x
        return np.array(
            [
                s.layers * (fixed + s.layer.bytes / (bandwidth * eff))
                + fixed
                + s.step.bytes / (bandwidth * eff)
                for s in samples
            ]
        )

    x = _least_squares(predict, measured, [10e-6, 0.7], [0.0, 0.05], [5e-4, 1.0])
    return float(x[0]), float(x[1]), FitError.of(predict(x), measured)


def fit_allreduce(
    tp: int, message_bytes: Sequence[float], seconds: Sequence[float]
) -> tuple[AllreduceFit, FitError]:
    """Latency plus ring traffic over the bus bandwidth, fitted in relative error."""
    ring = 2.0 * (tp - 1) / tp * np.asarray(message_bytes, float)
    latency_s, bandwidth, error = fit_latency_bandwidth(ring, seconds)
    return AllreduceFit(latency_s, bandwidth), error


def fit_latency_bandwidth(
    traffic_bytes: Sequence[float], seconds: Sequence[float]
) -> tuple[float, float, FitError]:
    """t = latency + traffic / bandwidth, fitted in relative error: one collective or transfer,
    with `traffic_bytes` the bytes that cross links at each measured message size."""
    traffic = np.asarray(traffic_bytes, float)
    measured = np.asarray(seconds, float)

    def predict(x: np.ndarray) -> np.ndarray:
        return x[0] + traffic / x[1]

    x = _least_squares(predict, measured, [10e-6, 100e9], [0.0, 1e9], [1e-3, 5e12])
    return float(x[0]), float(x[1]), FitError.of(predict(x), measured)


def fit_ring_extrapolation(
    curves: dict[int, tuple[Sequence[float], Sequence[float]]],
) -> tuple[RingExtrapolation, dict[str, dict[str, float]]]:
    """Per-hop latency and ring bandwidth of `RingExtrapolation` from measured all-reduce
    curves of two or more TP sizes at the same message sizes (tp -> (bytes, seconds)).

    The fit predicts each larger group's curve from the next smaller one (t_b = t_a + increment)
    and minimises the relative error of that prediction. Checks, returned by name: both
    directions in-sample ('a->b', 'b->a'), and 'holdout a->b': fitted on every other message
    size, scored on the rest. The hop latency rests on one difference of group sizes; with
    two measured sizes nothing else checks it.
    """
    sizes = sorted(curves)
    if len(sizes) < 2:
        raise ValueError("ring extrapolation needs all-reduce curves of two TP sizes")
    pairs = []
    for a, b in zip(sizes, sizes[1:]):
        ta = dict(zip(*curves[a]))
        tb = dict(zip(*curves[b]))
        common = sorted(set(ta) & set(tb))
        pairs.append((a, b, np.array(common), np.array([ta[m] for m in common]), np.array([tb[m] for m in common])))

    def fit(select: Callable[[np.ndarray], np.ndarray]) -> RingExtrapolation:
        def predict(x: np.ndarray) -> np.ndarray:
            ring = RingExtrapolation(float(x[0]), float(x[1]))
            return np.concatenate([select(ta + ring.increment_s(m, a, b)) for a, b, m, ta, _ in pairs])

        measured = np.concatenate([select(tb) for *_, tb in pairs])
        x = _least_squares(predict, measured, [1e-6, 300e9], [0.0, 1e9], [1e-4, 5e12])
        return RingExtrapolation(float(x[0]), float(x[1]))

    ring = fit(lambda v: v)
    checks: dict[str, dict[str, float]] = {}
    for a, b, m, ta, tb in pairs:
        up = ta + ring.increment_s(m, a, b)
        down = tb - ring.increment_s(m, a, b)
        checks[f"tp{a}->tp{b}"] = FitError.of(up, tb).as_dict()
        checks[f"tp{b}->tp{a}"] = FitError.of(down, ta).as_dict()
    even = fit(lambda v: v[0::2])
    for a, b, m, ta, tb in pairs:
        pred = (ta + even.increment_s(m, a, b))[1::2]
        checks[f"holdout tp{a}->tp{b}"] = FitError.of(pred, tb[1::2]).as_dict()
    return ring, checks
