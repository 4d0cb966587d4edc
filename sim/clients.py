"""The SimPy edge on the traffic side: who sends requests, and when.

An open-loop workload is a list of timed requests (`arrival_process`). Closed-loop users and
multi-turn sessions wait for answers: each is a SimPy process that sends a request, waits
until the engine reports it finished (or rejected, through `Replica.on_finish`), thinks, and
sends the next. One event per request sent and one per think time; never one per token.
"""

from __future__ import annotations

import itertools
import logging
from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Callable, Iterable, Iterator

import simpy

from sim.core.request import Request, RequestStatus
from sim.metrics.recorder import Recorder
from sim.simulation import Replica, Router, arrival_process, dispatch
from sim.workload.request_spec import RequestSpec
from sim.workload.sessions import Session, SessionSource

log = logging.getLogger(__name__)

MAX_INSTANT_REFUSALS = 1000  # refusals in a row at one instant before a lone user gives up


def start_traffic(
    env: simpy.Environment,
    workload: Iterator[RequestSpec] | SessionSource,
    make_request: Callable[[RequestSpec], Request],
    replicas: list[Replica],
    router: Router,
    recorder: Recorder,
    max_concurrency: int | None = None,
) -> None:
    """Start the processes that send the workload (what `sim.workload.build_workload` built);
    open-loop arrivals go through a `LimitedSender` when `max_concurrency` is set."""
    if isinstance(workload, SessionSource):
        Clients(env, workload, make_request, replicas, router, recorder).start()
    elif max_concurrency is not None:
        sender = LimitedSender(env, make_request, replicas, router, recorder, max_concurrency)
        env.process(sender.send(workload))
    else:
        env.process(arrival_process(env, workload, make_request, replicas, router, recorder))


class _Sender(ABC):
    """A client that hears back from the engines: where it sends, and the finish hook of
    every entry point (`Replica.on_finish`, the P/D proxy's) pointing at `_on_finish`."""

    def __init__(
        self,
        env: simpy.Environment,
        make_request: Callable[[RequestSpec], Request],
        replicas: list[Replica],
        router: Router,
        recorder: Recorder,
    ) -> None:
        self.env = env
        self.make_request = make_request
        self.replicas = replicas
        self.router = router
        self.recorder = recorder
        for replica in replicas:
            replica.on_finish = self._on_finish

    def _dispatch(self, spec: RequestSpec) -> None:
        dispatch(self.make_request(spec), self.replicas, self.router, self.recorder)

    @abstractmethod
    def _on_finish(self, request: Request) -> None:
        """A request sent here has finished or was refused."""


class LimitedSender(_Sender):
    """Open-loop arrivals through a client that keeps at most `limit` requests in flight.

    Behaviour matched: `vllm bench serve --max-concurrency` (vLLM 0.24.0,
    `vllm/benchmarks/serve.py`): each request waits on one `asyncio.Semaphore(max_concurrency)`
    before it is sent, and a waiter is woken when a request in flight returns, first come
    first served. So a request due while `limit` are in flight is sent when one finishes (or
    is refused), in arrival order, and its latencies count from that send, as the benchmark's
    `start_time` does. One event per request sent and one per wait; never one per token.
    """

    def __init__(
        self,
        env: simpy.Environment,
        make_request: Callable[[RequestSpec], Request],
        replicas: list[Replica],
        router: Router,
        recorder: Recorder,
        limit: int,
    ) -> None:
        super().__init__(env, make_request, replicas, router, recorder)
        self.limit = limit
        self.in_flight = 0
        self._slot: simpy.Event | None = None  # what the sender waits on while all slots are taken

    def send(self, specs: Iterable[RequestSpec]):
        env = self.env
        for spec in specs:
            delay = spec.arrival_s - env.now
            if delay > 0.0:
                yield env.timeout(delay)
            while self.in_flight >= self.limit:
                self._slot = env.event()
                yield self._slot
            if spec.arrival_s != env.now:  # it waited for a slot: it is sent now
                spec = replace(spec, arrival_s=env.now)
            self.in_flight += 1  # before dispatch: a refusal frees the slot at once
            self._dispatch(spec)

    def _on_finish(self, request: Request) -> None:
        self.in_flight -= 1
        slot = self._slot
        if slot is not None:
            self._slot = None
            slot.succeed()


class Clients(_Sender):
    """Users that wait for answers: `concurrency` closed-loop users, or one conversation per
    arrival of an open-loop process. Each turn is sent after the previous answer plus a think
    time; no request is sent at or after the workload's `duration_s`."""

    def __init__(
        self,
        env: simpy.Environment,
        source: SessionSource,
        make_request: Callable[[RequestSpec], Request],
        replicas: list[Replica],
        router: Router,
        recorder: Recorder,
    ) -> None:
        self.source = source
        self._answers: dict[int, simpy.Event] = {}  # request_id -> event its sender waits on
        self._request_ids = itertools.count()
        # Fires when any request finishes: a rejected user with no think time retries then,
        # so a full queue cannot make it retry forever at one instant.
        self._progress = env.event()
        super().__init__(env, make_request, replicas, router, recorder)

    def start(self) -> None:
        if self.source.closed_loop:
            for _ in range(self.num_users()):
                self.env.process(self.user())
        else:
            self.env.process(self.session_arrivals())

    def num_users(self) -> int:
        """Users that can ever send: each starts a conversation of one request or more at
        t = 0, so with a budget of N requests, users past the N-th would get none (and draw
        nothing). Starting only these gives the same run, without 1e8 idle processes."""
        budget = self.source.requests_left
        return self.source.concurrency if budget is None else min(self.source.concurrency, budget)

    def user(self):
        """A closed-loop user: conversations back to back, thinking after every answer.

        A refused request answers at once. With no think time, a user refused again at the
        same instant waits until the engine finishes a request (a full queue then drains),
        or, with nothing in flight, retries at once, giving up after MAX_INSTANT_REFUSALS
        refusals in a row: otherwise simulated time could never advance.
        """
        env = self.env
        refusals, refused_at_s = 0, -1.0
        first = True
        while True:
            if not first:
                yield from self._think()
            first = False
            if self._past_duration():
                return
            session = self.source.new_session()
            if session is None:
                return
            refused = yield from self.conversation(session)
            if not refused or self.source.think_time_mean_s > 0.0:
                continue
            refusals = refusals + 1 if refused_at_s == env.now else 1
            refused_at_s = env.now
            if refusals < 2:
                continue
            if any(replica.num_outstanding for replica in self.replicas):
                yield self._progress
            elif refusals >= MAX_INSTANT_REFUSALS:
                log.warning(
                    "a closed-loop user was refused %d times in a row at t=%.3f s with nothing in "
                    "flight and stops; check the lengths against scheduler.max_model_len",
                    refusals, env.now,
                )
                return

    def session_arrivals(self):
        """Open loop: a conversation starts at each arrival time of the workload's process."""
        env = self.env
        for start_s in self.source.start_times:  # type: ignore[union-attr]
            delay = start_s - env.now
            if delay > 0.0:
                yield env.timeout(delay)
            session = self.source.new_session()
            if session is None:
                return
            env.process(self.conversation(session))

    def conversation(self, session: Session):
        """Send the session's turns in order; a rejected turn ends the conversation (the
        process then returns True)."""
        env = self.env
        for turn in range(session.num_turns):
            if turn:
                yield from self._think()
            if self._past_duration():
                return False
            answer = self._send(session.next_request(next(self._request_ids), env.now))
            request = yield answer
            if request.status == RequestStatus.REJECTED:
                return True
        return False

    def _send(self, spec: RequestSpec) -> simpy.Event:
        answer = self.env.event()
        self._answers[spec.request_id] = answer  # before dispatch: a rejection answers at once
        self._dispatch(spec)
        return answer

    def _on_finish(self, request: Request) -> None:
        answer = self._answers.pop(request.request_id, None)
        if answer is not None:
            answer.succeed(request)
        if request.status == RequestStatus.FINISHED and self._progress.callbacks:
            self._progress.succeed()
            self._progress = self.env.event()

    def _think(self):
        think_s = self.source.think_time_s()
        if think_s > 0.0:
            yield self.env.timeout(think_s)

    def _past_duration(self) -> bool:
        duration_s = self.source.duration_s
        return duration_s is not None and self.env.now >= duration_s
