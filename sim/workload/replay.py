"""Turn a trace's own clock into simulated arrival times: window, shift, spread, rescale.

Order of operations, all on the trace clock until the last step:
  1. times relative to the trace's first request;
  2. keep the window start_s <= t < end_s;
  3. shift so the first kept request arrives at t = 0;
  4. optionally spread requests that share one timestamp over `spread_ties_s`;
  5. divide by `speedup`, or rescale to `target_rate`;
  6. stop at num_requests / duration_s (simulated clock).
"""

from __future__ import annotations

import numpy as np

from sim.errors import ConfigError
from sim.workload.spec import WorkloadSpec


def replay_times(arrival_s: np.ndarray, cfg: WorkloadSpec) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the trace to replay (indices) and their simulated arrival times (seconds)."""
    t = arrival_s - arrival_s[0]
    end = np.inf if cfg.end_s is None else cfg.end_s
    rows = np.flatnonzero((t >= cfg.start_s) & (t < end))
    if len(rows) == 0:
        raise ConfigError(
            f"workload.start_s/end_s: the window [{cfg.start_s}, {end}) s holds no request; "
            f"the trace spans 0 to {t[-1]:.1f} s after its first request"
        )
    t = t[rows] - t[rows[0]]
    if cfg.spread_ties_s > 0:
        t = spread_ties(t, cfg.spread_ties_s)
    t = _rescale(t, cfg)
    if cfg.num_requests is not None:
        rows, t = rows[: cfg.num_requests], t[: cfg.num_requests]
    if cfg.duration_s is not None:
        cut = int(np.searchsorted(t, cfg.duration_s, side="left"))
        rows, t = rows[:cut], t[:cut]
    return rows, t


def _rescale(t: np.ndarray, cfg: WorkloadSpec) -> np.ndarray:
    if cfg.target_rate is None:
        return t / cfg.speedup if cfg.speedup != 1.0 else t
    span = float(t[-1])
    if len(t) < 2 or span <= 0:
        raise ConfigError(
            "workload.target_rate needs at least two distinct arrival times in the replayed window"
        )
    # The trace's mean rate is (n - 1) / span; stretch the clock so it becomes target_rate.
    return t * ((len(t) - 1) / span / cfg.target_rate)


def spread_ties(t: np.ndarray, spread_s: float) -> np.ndarray:
    """Spread each run of equal times t0 evenly over [t0, t0 + spread_s).

    Traces with coarse timestamps (Mooncake's ~3 s buckets) otherwise deliver each bucket as
    one burst. The k requests of a run get offsets 0, s/k, ..., (k-1)s/k, in file order.
    """
    starts = np.flatnonzero(np.r_[True, np.diff(t) > 0])
    lengths = np.diff(np.r_[starts, len(t)])
    run = np.repeat(np.arange(len(starts)), lengths)
    position = np.arange(len(t)) - starts[run]
    spread = t + position * (spread_s / lengths[run])
    if np.any(np.diff(spread) < 0):
        gap = float(np.min(np.diff(t[starts]))) if len(starts) > 1 else 0.0
        raise ConfigError(
            f"workload.spread_ties_s = {spread_s} s reorders requests: the smallest gap between distinct "
            f"timestamps is {gap:.3f} s; use a value no larger than that"
        )
    return spread
