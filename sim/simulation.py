"""The SimPy edge: one arrival process, one engine loop per replica. One event per arrival and
one per engine step; scheduler, KV manager, cost model, router and recorder are plain Python."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Protocol

import numpy as np
import simpy

from sim.core.request import Request, RequestStatus
from sim.core.scheduler import Scheduler
from sim.cost.batch import BatchSummary
from sim.cost.breakdown import StepCost
from sim.metrics.recorder import Recorder
from sim.workload.block_hash import chain_block_hash
from sim.workload.request_spec import RequestSpec


class CostModel(Protocol):
    def step_cost(self, batch: BatchSummary) -> StepCost: ...


class Replica:
    """One engine (a TP group of GPUs) running vLLM's schedule → execute → update loop."""

    def __init__(
        self,
        replica_id: int,
        env: simpy.Environment,
        scheduler: Scheduler,
        cost_model: CostModel,
        recorder: Recorder,
        on_step: Callable[[float, int], None] | None = None,
        max_waiting_requests: int | None = None,
    ) -> None:
        self.replica_id = replica_id
        self.on_step = on_step
        self.max_waiting_requests = max_waiting_requests  # admission limit; None: unbounded
        self.env = env
        self.scheduler = scheduler
        self.cost_model = cost_model
        self.recorder = recorder
        self.num_outstanding = 0
        self.num_steps = 0
        # Told of every request that finishes or is rejected here (sim.clients: closed loops).
        self.on_finish: Callable[[Request], None] | None = None
        self._wakeup: simpy.Event | None = None
        self.process = env.process(self.engine_loop())

    def add_request(self, request: Request) -> None:
        request.replica_id = self.replica_id
        reason = self.scheduler.rejection_reason(request.num_prompt_tokens, request.max_tokens)
        limit = self.max_waiting_requests
        if not reason and limit is not None and len(self.scheduler.waiting) >= limit:
            reason = f"queue full: {limit} requests already waiting (scheduler.max_waiting_requests)"
        if reason:
            request.status = RequestStatus.REJECTED
            request.reject_reason = reason
            self.recorder.record_rejected(request)
            if self.on_finish is not None:
                self.on_finish(request)
            return
        self.scheduler.add_request(request)
        self.num_outstanding += 1
        if self._wakeup is not None and not self._wakeup.triggered:
            self._wakeup.succeed()

    def engine_loop(self):
        """Schedule a batch, hold for its step time, apply its outputs; sleep when idle."""
        env = self.env
        scheduler = self.scheduler
        kv = scheduler.kv_cache_manager
        while True:
            if not scheduler.has_unfinished_requests():
                self._wakeup = env.event()
                yield self._wakeup
                self._wakeup = None
            start_s = env.now
            output = scheduler.schedule(start_s)
            if not output.decodes and not output.others:
                raise RuntimeError(
                    f"replica {self.replica_id}: unfinished requests but nothing schedulable at"
                    f" t={start_s:.6f}s (running={len(scheduler.running)},"
                    f" waiting={len(scheduler.waiting)}, free blocks="
                    f"{kv.block_pool.get_num_free_blocks()})"
                )
            cost = self.cost_model.step_cost(output.batch)
            yield env.timeout(cost.time_s)
            finished = scheduler.update_from_output(output, env.now)
            self.recorder.record_step(
                self.replica_id,
                self.num_steps,
                start_s,
                output,
                cost,
                len(scheduler.running),
                len(scheduler.waiting),
                kv.num_used_blocks,
                kv.usage,
            )
            self.num_steps += 1
            for request in finished:
                self.num_outstanding -= 1
                self.recorder.record_finished(request)
                if self.on_finish is not None:
                    self.on_finish(request)
            if self.on_step is not None:
                self.on_step(env.now, len(self.recorder.requests.ttft_s))


class Router(Protocol):
    def route(self, replicas: list[Replica]) -> int: ...


@dataclass(frozen=True, slots=True)
class RequestFactory:
    """Turns a workload's RequestSpec into an engine Request with KV block identities."""

    block_size: int
    enable_prefix_caching: bool

    def __call__(self, spec: RequestSpec) -> Request:
        hashes: tuple[int, ...] = ()
        if self.enable_prefix_caching:
            if spec.block_hashes:  # sessions: already per KV block, answer included
                hashes = spec.block_hashes
            elif spec.prefix_hashes:
                hashes = kv_block_hashes(spec, self.block_size)
        return Request(
            request_id=spec.request_id,
            arrival_s=spec.arrival_s,
            num_prompt_tokens=spec.prompt_tokens,
            max_tokens=spec.output_tokens,
            block_hashes=hashes,
            session_id=spec.session_id,
            turn=spec.turn,
        )


def kv_block_hashes(spec: RequestSpec, block_size: int) -> tuple[int, ...]:
    """Identities of the prompt's full KV blocks from the workload's coarser prefix hashes.

    Workload block j covers prompt tokens [j*P, (j+1)*P) (P = prefix_block_tokens); a hash
    chain over the workload's ids, c_j = H(c_{j-1}, id_j) (`chain_block_hash`, 64-bit blake2b),
    identifies blocks 0..j, as vLLM chains a block's hash with its parent's. KV block k covers
    tokens [k*B, (k+1)*B); its identity mixes k with c_j of the workload block holding its last
    token, so two requests share KV block k exactly when they share every workload block up to
    that one. One hash per workload block; the per-KV-block work is vectorised.
    """
    per_block = spec.prefix_block_tokens
    # A KV block is shareable only if the workload block holding its last token is declared.
    limit = min(spec.prompt_tokens // block_size, (len(spec.prefix_hashes) * per_block) // block_size)
    if limit <= 0:
        return ()
    chain = []
    parent = 0
    for block_id in spec.prefix_hashes[: (limit * block_size - 1) // per_block + 1]:
        parent = chain_block_hash(parent, (block_id,))
        chain.append(parent)
    c = np.array(chain, dtype=np.uint64)  # wrap-around arithmetic in uint64 is intended
    if per_block % block_size == 0:  # the usual case: whole KV blocks per workload block
        c = np.repeat(c, per_block // block_size)[:limit]
    else:
        c = c[(np.arange(1, limit + 1) * block_size - 1) // per_block]
    return tuple((c * _MIX + np.arange(limit, dtype=np.uint64)).tolist())


_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd: k -> c * _MIX + k is one-to-one for each chain c


def arrival_process(
    env: simpy.Environment,
    specs: Iterable[RequestSpec],
    make_request: Callable[[RequestSpec], Request],
    replicas: list[Replica],
    router: Router,
    recorder: Recorder,
):
    """Hands each request to a replica at its arrival time (one timeout per distinct time)."""
    for spec in specs:
        delay = spec.arrival_s - env.now
        if delay > 0.0:
            yield env.timeout(delay)
        dispatch(make_request(spec), replicas, router, recorder)


def dispatch(request: Request, replicas: list[Replica], router: Router, recorder: Recorder) -> None:
    """A request arrives: the router picks its replica."""
    replica = replicas[router.route(replicas)]
    recorder.record_arrival(request.arrival_s, replica.replica_id)
    replica.add_request(request)
