"""Pauses after the engine in a measured run: every request's tokens stop, then arrive in a burst.

When the process between the engine core and the client (vLLM's API process with its output
handler, or the benchmark client itself) stops for a while, for a garbage collection or
anything else, the engine goes on generating: its outputs queue up, and once the process runs
again each request receives the tokens of the steps it missed in quick succession. The client
sees one long gap followed by a run of short ones. An engine stall looks different: the gap is
followed by the usual cadence, since nothing queued meanwhile.

The simulator models the engine and a fixed latency after it, not pauses of the processes
around it. So a replay finds such pauses and reports the measured ITL without them next to the
full figure (the comparison itself keeps every gap):

- in one request, a gap longer than `STALL_FACTOR` times its median gap is a pause it saw if
  a burst follows: at least `BURST_TOKENS` gaps in a row shorter than `BURST_FACTOR` median
  gaps, which together with the pause take no more than 1.5 median gaps per token, so the
  tokens the engine made meanwhile all came (an engine stall has no burst after it);
- pauses seen by at least half the requests in flight, overlapping in time, are one stall of
  the output path, from the median of their starts to the median of their ends.

Without the stalls, a request's gap that spans a stall and its burst gaps are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.replay.measured import MeasuredRun

STALL_FACTOR = 5.0  # a gap this many median gaps long, at least, may be a pause
BURST_FACTOR = 0.7  # a burst's gaps are shorter than this many median gaps
BURST_TOKENS = 4  # the fewest queued tokens a burst delivers
CATCH_UP = 1.5  # pause and burst together: at most this many median gaps per token
MIN_SHARE = 0.5  # of the requests in flight that saw the pause
MIN_REQUESTS = 2


@dataclass(frozen=True, slots=True)
class Stall:
    start_s: float  # on the run's clock
    end_s: float
    num_requests: int  # that saw it
    num_in_flight: int


@dataclass(frozen=True, slots=True)
class OutputStalls:
    stalls: tuple[Stall, ...]
    itl_without_s: np.ndarray  # pooled gaps with the stalls' gaps and bursts left out

    @property
    def spans(self) -> str:
        return ", ".join(f"{(s.end_s - s.start_s) * 1e3:,.0f} ms at {s.start_s:,.1f} s" for s in self.stalls)

    @property
    def itl_p99_without_s(self) -> float:
        return float(np.percentile(self.itl_without_s, 99)) if self.itl_without_s.size else float("nan")

    @property
    def note(self) -> str:
        return (
            f"{len(self.stalls)} pause(s) after the engine ({self.spans}): most requests in flight got no"
            " token, then their queued tokens in a burst, so the engine kept running while the output path or"
            " the client was paused, which is not modelled; without those gaps the measured ITL p99 is"
            f" {self.itl_p99_without_s * 1e3:,.1f} ms"
        )


def _pauses(first_s: float, gaps: np.ndarray) -> list[tuple[float, float, int, int]]:
    """(start, end, index of the pause's gap, number of burst gaps) of each pause one request saw."""
    if gaps.size <= BURST_TOKENS or not np.isfinite(first_s):
        return []
    median = float(np.median(gaps))
    if median <= 0.0:
        return []
    short = gaps < BURST_FACTOR * median
    times = first_s + np.concatenate(([0.0], np.cumsum(gaps)))
    found = []
    for i in np.flatnonzero(gaps > STALL_FACTOR * median):
        n = 0
        while i + 1 + n < gaps.size and short[i + 1 + n]:
            n += 1
        if n >= BURST_TOKENS and gaps[i : i + 1 + n].sum() <= CATCH_UP * (n + 1) * median:
            found.append((float(times[i]), float(times[i + 1]), int(i), n))
    return found


def find_output_stalls(run: MeasuredRun) -> OutputStalls | None:
    """The run's output-path stalls, or None when there are none (or no per-token times)."""
    gaps_by_request = run.request_gaps_s
    if not gaps_by_request or not any(g.size for g in gaps_by_request):
        return None
    first = run.send_s + run.ttft_s
    last = run.send_s + run.e2e_s
    seen = sorted(
        (start, end, r, i, n)
        for r, gaps in enumerate(gaps_by_request)
        for start, end, i, n in _pauses(float(first[r]), gaps)
    )
    if not seen:
        return None
    stalls: list[Stall] = []
    drop = [np.zeros(g.size, dtype=bool) for g in gaps_by_request]
    group: list[tuple[float, float, int, int, int]] = []
    reach = -np.inf
    for pause in [*seen, (np.inf, np.inf, -1, 0, 0)]:
        if group and pause[0] > reach:  # overlaps none of the group: the group is complete
            start = float(np.median([p[0] for p in group]))
            end = float(np.median([p[1] for p in group]))
            mid = (start + end) / 2
            in_flight = int(np.sum((first <= mid) & (last >= mid)))
            requests = {p[2] for p in group}
            if len(requests) >= max(MIN_REQUESTS, MIN_SHARE * in_flight):
                stalls.append(Stall(start, end, len(requests), in_flight))
                for _, _, r, i, n in group:  # the pause's gap and its burst
                    drop[r][i : i + 1 + n] = True
            group, reach = [], -np.inf
        group.append(pause)
        reach = max(reach, pause[1])
    if not stalls:
        return None
    kept = [g[~m] for g, m in zip(gaps_by_request, drop)]
    return OutputStalls(tuple(stalls), np.concatenate(kept))
