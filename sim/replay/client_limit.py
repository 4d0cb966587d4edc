"""When each request of a concurrency-limited run was due, for replaying it through the same limit.

A client with `--max-concurrency N` (vLLM 0.24.0 `vllm bench serve`, `vllm/benchmarks/serve.py`:
one `asyncio.Semaphore(N)` around every request) sends a request at its due time or, if N are
in flight then, when one returns. The measured send time is therefore the later of the two,
and replaying it as a fixed arrival is wrong whenever the simulated engine is slower or faster
than the real one: a request that waited for a slot must wait for a slot in the simulation,
not arrive at the measured moment.

So each request is given the time it was due, and the simulation applies the same limit
(`workload.max_concurrency`, `sim.clients.LimitedSender`):
- a run sent at an infinite rate (`request_rate: inf` in the benchmark's JSON) had every request
  due at its start;
- otherwise a request counts as having waited when a slot freed (some earlier request's last
  token arrived) within `SLOT_REACTION_S` before its send while the other N - 1 slots were
  taken (the requests in flight and those slots make N): it is due no later than the request
  before it, and is sent when a slot frees. Every other request was sent at its due time.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

import numpy as np

from sim.errors import TraceError
from sim.replay.measured import MeasuredRun

# How soon after a request returns a client sends the one waiting for its slot: an asyncio
# wake-up and the next HTTP request (0.5 ms in the measurement set's one-at-a-time run). A
# request sent later than this after the last free slot appeared was due at its send.
SLOT_REACTION_S = 0.005


def is_limit(value: object) -> bool:
    """A concurrency limit as a file may state it: a whole number of requests, at least 1."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass(frozen=True, slots=True)
class ClientLimit:
    """A replay's client: at most `max_concurrency` in flight, each request due at `due_s`."""

    max_concurrency: int
    source: str  # where the limit came from
    due_s: np.ndarray
    num_waited: int  # requests that waited for a slot in the measured run

    @property
    def description(self) -> str:
        return (
            f"at most {self.max_concurrency:,} request(s) in flight ({self.source});"
            f" {self.num_waited:,} request(s) waited for a slot in the measured run and are sent"
            " when one frees in the simulation"
        )


def client_limit(run: MeasuredRun, max_concurrency: int, source: str) -> ClientLimit:
    due, waited = due_times(run, max_concurrency, run.infinite_rate)
    return ClientLimit(max_concurrency, source, due, waited)


def peak_in_flight(starts_s: np.ndarray, ends_s: np.ndarray) -> int:
    """The most intervals [start, end) open at once: a request ending at t frees its slot
    before one starting at t takes it (a closed-loop user with no think time)."""
    level = peak = 0
    for _, step in sorted([(float(t), 1) for t in starts_s] + [(float(t), -1) for t in ends_s]):
        level += step
        peak = max(peak, level)
    return peak


def max_in_flight(run: MeasuredRun) -> int:
    """The most requests the measured run had in flight at once (0 without end times)."""
    if not np.isfinite(run.e2e_s).all():
        return 0
    return peak_in_flight(run.send_s, run.send_s + run.e2e_s)


def limit_hint(run: MeasuredRun) -> str | None:
    """A note when the run looks concurrency-limited but no limit was given: it never had more
    than N in flight, and at least a tenth of its requests (two or more) went out within
    SLOT_REACTION_S of an answer while the other N - 1 slots were taken."""
    peak = max_in_flight(run)
    if peak < 1 or peak >= run.num_requests:
        return None
    _, waited = due_times(run, peak)
    if waited < max(2, run.num_requests // 10):
        return None
    return (
        f"the measured run never had more than {peak:,} request(s) in flight, and {waited:,} were sent"
        f" within {SLOT_REACTION_S * 1e3:.0f} ms of an answer: if its client kept at most {peak:,} in"
        f" flight (vllm bench serve --max-concurrency), replay it with --max-concurrency {peak}"
    )


def due_times(run: MeasuredRun, limit: int, infinite_rate: bool = False) -> tuple[np.ndarray, int]:
    """Each request's due time (non-decreasing, in send order) and how many waited for a slot."""
    send = run.send_s
    if infinite_rate:
        return np.full_like(send, send.min()), max(run.num_requests - limit, 0)
    if not np.isfinite(run.e2e_s).all():
        raise TraceError(
            f"{run.source}: replaying under a concurrency limit needs every request's end time"
            " (E2E or token times) to tell which requests waited for a slot; drop --max-concurrency"
        )
    finish = send + run.e2e_s
    due = send.copy()
    waited = 0
    pending: list[float] = []  # finishes of the requests sent so far and still in flight
    recent: deque[float] = deque()  # slots freed within SLOT_REACTION_S before the current send
    for i in range(run.num_requests):
        while pending and pending[0] <= send[i]:
            recent.append(heapq.heappop(pending))
        while recent and recent[0] < send[i] - SLOT_REACTION_S:
            recent.popleft()
        # All slots were taken until one or more freed just before this send: it waited.
        if i and recent and len(pending) + len(recent) >= limit:
            due[i] = due[i - 1]
            waited += 1
        heapq.heappush(pending, float(finish[i]))
    return due, waited
