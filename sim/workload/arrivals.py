"""Open-loop arrival processes with a constant rate, and the bounds that stop them.

A process is an object whose `next_chunk(n)` returns the next arrival times (absolute seconds,
non-decreasing, at most `n` of them). Drawing in chunks keeps generation vectorised; the
bounding loop in `bounded_chunks` keeps memory flat for long, duration-bound runs. Because
NumPy draws sequentially, the first k arrivals do not depend on how many are asked for later.
"""

from __future__ import annotations

from typing import Iterator, Protocol

import numpy as np

from sim.errors import ConfigError
from sim.workload.request_spec import MAX_ARRIVAL_S

CHUNK = 16_384  # arrivals per vectorised draw: large enough to amortise NumPy calls


class ArrivalProcess(Protocol):
    def next_chunk(self, n: int) -> np.ndarray:
        """Next at most `n` arrival times (seconds), continuing from the previous chunk."""
        ...


class RenewalArrivals:
    """I.i.d. gaps: exponential (Poisson), gamma with a given CV, or constant.

    The process starts empty at t = 0, so the first request arrives one gap after the start
    (for `constant`, at exactly 1/rate).
    """

    def __init__(self, kind: str, rate: float, rng: np.random.Generator, cv: float | None = None):
        self._kind = kind
        self._rate = rate
        self._rng = rng
        self._cv = cv
        self._t = 0.0
        self._count = 0  # constant: arrivals so far, so times are i / rate without drift

    def next_chunk(self, n: int) -> np.ndarray:
        if self._kind == "constant":
            times = (self._count + np.arange(1, n + 1, dtype=np.float64)) / self._rate
            self._count += n
            return times
        times = self._t + np.cumsum(self._gaps(n))
        self._t = float(times[-1])
        return times

    def _gaps(self, n: int) -> np.ndarray:
        mean_gap = 1.0 / self._rate
        if self._kind == "poisson":
            return self._rng.exponential(mean_gap, size=n)
        # gamma: shape k = 1 / cv^2 gives CV = cv; the scale keeps the mean at 1 / rate.
        shape = 1.0 / (self._cv * self._cv)  # type: ignore[operator]
        return self._rng.gamma(shape, mean_gap / shape, size=n)


class OfflineArrivals:
    """Everything at t = 0: the MLPerf Offline scenario, bounded only by num_requests."""

    def next_chunk(self, n: int) -> np.ndarray:
        return np.zeros(n)


def bounded_chunks(
    process: ArrivalProcess,
    num_requests: int | None,
    duration_s: float | None,
    chunk: int = CHUNK,
) -> Iterator[np.ndarray]:
    """Yield arrival-time chunks until `num_requests` or `duration_s`, whichever comes first.

    Only arrivals strictly before `duration_s` are kept. The caller guarantees at least one
    bound is set (validation does), otherwise this never ends.
    """
    remaining = num_requests
    while remaining is None or remaining > 0:
        times = process.next_chunk(chunk if remaining is None else min(chunk, remaining))
        if duration_s is not None:
            cut = int(np.searchsorted(times, duration_s, side="left"))
            if cut < len(times):
                if cut:
                    yield times[:cut]
                return
        if len(times) and times[-1] > MAX_ARRIVAL_S:  # validation bounds the mean; this, a draw
            raise ConfigError(
                f"an arrival falls at {times[-1]:g} s, past 2**32 s (136 years) of simulated time, "
                "where float64 seconds no longer resolve an engine step; raise workload.rate or "
                "lower workload.num_requests"
            )
        if len(times):
            yield times
        if remaining is not None:
            remaining -= len(times)
