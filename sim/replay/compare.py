"""Measured against simulated: the same statistics on both sides, and their relative error.

Percentiles interpolate linearly between order statistics (numpy's default), as
`sim.metrics.summary.distribution` does for the simulator's own ITL percentiles and as
`vllm bench serve` reports them (`np.percentile`, vllm/benchmarks/serve.py, vLLM 0.24.0).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

LATENCY_METRICS = ("ttft", "tpot", "itl", "e2e")
STATS = ("mean", "p50", "p90", "p99")
# Below this many requests a p90 or p99 is one or two samples: only the mean and p50 are compared.
MIN_REQUESTS_FOR_TAILS = 20
# A run that small is also simulated this many times (seeds 0, 1, ...): one simulated draw of
# a p50 of three requests carries the engine's step-to-step spread (a launch varies by ~30%),
# so the prediction is the median over the seeds, and their range is shown beside it.
SMALL_RUN_SEEDS = 9


@dataclass(frozen=True, slots=True)
class Side:
    """One side of the comparison: throughput and latency distributions (seconds)."""

    num_requests: int  # finished
    output_tokens_per_s: float | None  # None: not measured (a file with lengths only)
    requests_per_s: float | None
    latency: dict[str, dict[str, float | None]]  # metric -> stat -> value; None: not measured


@dataclass(frozen=True, slots=True)
class Row:
    metric: str  # throughput | ttft | tpot | itl | e2e
    stat: str  # output_tokens_per_s | requests_per_s | mean | p50 | p90 | p99
    measured: float | None
    simulated: float | None
    # Lowest and highest over the seeds, when the prediction is a median over several.
    simulated_low: float | None = None
    simulated_high: float | None = None

    @property
    def error(self) -> float | None:
        """Signed relative error of the prediction, (simulated - measured) / measured."""
        if self.measured is None or self.simulated is None or self.measured == 0:
            return None
        return self.simulated / self.measured - 1.0

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "error": self.error}


def distribution(values: np.ndarray) -> dict[str, float | None]:
    """Mean and p50/p90/p99 of the finite values; all None when there are none."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return dict.fromkeys(STATS)
    stats: dict[str, float | None] = {"mean": float(values.mean())}
    for p in (50, 90, 99):
        stats[f"p{p}"] = float(np.percentile(values, p))
    return stats


def throughput(send_s: np.ndarray, last_token_s: np.ndarray, output_tokens: np.ndarray) -> tuple[float, float]:
    """(output tokens/s, requests/s) over first send to last token; the same on both sides."""
    done = np.isfinite(last_token_s)
    if not done.any():
        return 0.0, 0.0
    span = float(last_token_s[done].max() - send_s.min())
    if span <= 0:
        return 0.0, 0.0
    return float(output_tokens[done].sum()) / span, float(done.sum()) / span


def stats_compared(num_requests: int) -> tuple[str, ...]:
    return STATS if num_requests >= MIN_REQUESTS_FOR_TAILS else ("mean", "p50")


def _figures(side: Side, num_requests: int) -> list[tuple[str, str, float | None]]:
    """(metric, stat, value) in the order of the comparison's rows."""
    out = [("throughput", "output_tokens_per_s", side.output_tokens_per_s),
           ("throughput", "requests_per_s", side.requests_per_s)]  # fmt: skip
    for metric in LATENCY_METRICS:
        for stat in stats_compared(num_requests):
            out.append((metric, stat, side.latency[metric].get(stat)))
    return out


def compare(measured: Side, simulated: Side | list[Side]) -> list[Row]:
    """Throughput rows, then each latency metric at the statistics the run size supports.
    Several simulated sides (seeds): each figure is their median, with their range."""
    sims = simulated if isinstance(simulated, list) else [simulated]
    n = measured.num_requests
    per_seed = [_figures(s, n) for s in sims]
    rows = []
    for i, (metric, stat, value) in enumerate(_figures(measured, n)):
        values = [fig[i][2] for fig in per_seed]
        if any(v is None for v in values):
            rows.append(Row(metric, stat, value, None))
        elif len(values) == 1:
            rows.append(Row(metric, stat, value, values[0]))
        else:
            rows.append(Row(metric, stat, value, float(np.median(values)), min(values), max(values)))
    return rows
