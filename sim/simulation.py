"""The SimPy edge: one arrival process, one engine loop per replica. One event per arrival and
one per engine step; scheduler, KV manager, cost model, router and recorder are plain Python."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol

import numpy as np
import simpy

from sim.core.request import Request, RequestStatus
from sim.core.engine_clock import EngineClock, StepTiming
from sim.core.scheduler import Scheduler, SchedulerOutput
from sim.cost.batch import BatchSummary
from sim.cost.breakdown import StepCost
from sim.metrics.pools import ReplicaStats
from sim.cost.drafter import SpeculativeCostModel
from sim.metrics.recorder import Recorder
from sim.workload.block_hash import chain_block_hash
from sim.workload.request_spec import RequestSpec


class CostModel(Protocol):
    def step_cost(self, batch: BatchSummary) -> StepCost: ...


class Replica:
    """One engine (a TP group of GPUs) running vLLM's engine-core loop (sim.core.engine_clock):
    with async scheduling the next step is scheduled and launched while the GPU runs the last
    one; without it, schedule, run and apply follow one another."""

    def __init__(
        self,
        replica_id: int,
        env: simpy.Environment,
        scheduler: Scheduler,
        cost_model: CostModel,
        recorder: Recorder,
        clock: EngineClock,
        async_scheduling: bool = True,
        on_step: Callable[[float, int], None] | None = None,
        max_waiting_requests: int | None = None,
        horizon_s: float | None = None,
        max_concurrent_batches: int | None = None,
        capacity: float = 1.0,
        records_finish: bool = True,
        spec_cost_model: SpeculativeCostModel | None = None,
    ) -> None:
        self.replica_id = replica_id
        # vLLM's batch queue (VllmConfig.max_concurrent_batches): 2 with async scheduling,
        # 1 without; pipeline parallelism keeps up to pp (+1 with async) steps in flight.
        self.max_concurrent_batches = max_concurrent_batches or (2 if async_scheduling else 1)
        # Relative serving capacity, for routers that weigh instances of a mixed pool.
        self.capacity = capacity
        # False for a P/D prefill instance: its finished requests are not the client's (the
        # proxy hands them to a decode instance through `on_finish`).
        self.records_finish = records_finish
        # Speculative decoding: prices the steps whose output carries a SpecBatch.
        self.spec_cost_model = spec_cost_model
        # Tokens delivered at or after the horizon never reach the client within the run: the
        # requests a step finished then are reported unfinished (sim.run), not finished.
        self.horizon_s = horizon_s
        self.undelivered: list[Request] = []
        self.on_step = on_step
        self.max_waiting_requests = max_waiting_requests  # admission limit; None: unbounded
        self.env = env
        self.scheduler = scheduler
        self.cost_model = cost_model
        self.recorder = recorder
        self.clock = clock
        self.async_scheduling = async_scheduling
        self.num_outstanding = 0
        self.num_steps = 0
        # Told of every request that finishes or is rejected here (sim.clients: closed loops).
        self.on_finish: Callable[[Request], None] | None = None
        # Told of every request that reaches the engine core (the P/D proxy times the decode leg).
        self.on_enqueue: Callable[[Request], None] | None = None
        # Per-replica sums for the pool metrics of a multi-pool deployment (sim.metrics.pools);
        # None for a single pool, whose figures are the run's.
        self.stats: ReplicaStats | None = None
        self._wakeup: simpy.Event | None = None
        self._input_s = clock.costs.input_s
        # Sent, not yet in the scheduler (on the input path): request_id -> request.
        self.in_transit: dict[int, Request] = {}
        self.process = env.process(self.engine_loop())

    def add_request(self, request: Request, count_arrival: bool = True) -> None:
        """A request is sent: refused at once if it can never run, else it reaches the engine
        core after the input path's latency (API process, IPC). `count_arrival`: False for the
        second leg of a request (a P/D decode instance), whose arrival was counted already."""
        request.replica_id = self.replica_id
        if count_arrival:
            self.recorder.record_arrival(request.arrival_s, self.replica_id)
        reason = self.scheduler.rejection_reason(request.num_prompt_tokens, request.max_tokens)
        limit = self.max_waiting_requests
        num_queued = len(self.scheduler.waiting) + len(self.in_transit)
        if not reason and limit is not None and num_queued >= limit:
            reason = f"queue full: {limit} requests already waiting (scheduler.max_waiting_requests)"
        if reason:
            request.status = RequestStatus.REJECTED
            request.reject_reason = reason
            self.recorder.record_rejected(request)
            if self.on_finish is not None:
                self.on_finish(request)
            return
        self.num_outstanding += 1
        if self._input_s > 0.0:
            self.in_transit[request.request_id] = request
            self.env.timeout(self._input_s).callbacks.append(lambda _: self._enqueue(request))
        else:
            self._enqueue(request)

    def _enqueue(self, request: Request) -> None:
        self.in_transit.pop(request.request_id, None)
        self.scheduler.add_request(request)
        if self.on_enqueue is not None:
            self.on_enqueue(request)
        self.wake()

    def wake(self) -> None:
        """Start the engine loop if it is idle: a request reached it, or a KV connector's
        transfer landed (sim.core.kv_connector)."""
        if self._wakeup is not None and not self._wakeup.triggered:
            self._wakeup.succeed()

    def _poll_connector(self) -> bool:
        """Hand the connector's finished sends and loads to the scheduler, as vLLM's model
        runner output does at each step; whether it reported anything."""
        connector = self.scheduler.connector
        if connector is None:
            return False
        finished_sending, finished_recving = connector.get_finished()
        if not (finished_sending or finished_recving):
            return False
        self.scheduler.update_from_kv_xfer_finished(finished_sending, finished_recving)
        return True

    def engine_loop(self):
        """One SimPy timeout per loop iteration; each iteration applies at most one step.

        vLLM's `step_with_batch_queue`: schedule and launch while the queue has room and
        something was scheduled, else wait for the oldest step in flight and apply it."""
        env = self.env
        scheduler = self.scheduler
        clock = self.clock
        depth = self.max_concurrent_batches
        throttled = getattr(scheduler, "current_step", None) is not None  # sim.core.pipeline_scheduler
        in_flight: deque[tuple[SchedulerOutput, StepCost, StepTiming]] = deque()
        while True:
            if not in_flight and not scheduler.has_unfinished_requests():
                self._wakeup = env.event()
                yield self._wakeup
                self._wakeup = None
            now = env.now
            launched = self._schedule_and_launch(now) if scheduler.has_unfinished_requests() else None
            cpu_free_s = launched[2].launch_end_s if launched else clock.empty_schedule_end_s(now)
            if launched is None and not in_flight:
                if throttled and scheduler.holds_requests():
                    # Pipeline parallelism: every running request sampled less than pp steps
                    # ago; vLLM's busy loop schedules empty steps until one is eligible again.
                    yield env.timeout(cpu_free_s - now)
                    continue
                if scheduler.num_waiting_for_remote_kvs or scheduler.sending:
                    # Idle until a transfer lands: the connector wakes the loop.
                    if not self._poll_connector():
                        self._wakeup = env.event()
                        yield self._wakeup
                        self._wakeup = None
                        self._poll_connector()
                    continue
                self._stuck(now)
            if launched is not None and len(in_flight) + 1 < depth:
                in_flight.append(launched)  # the queue has room: schedule the next one at once
                yield env.timeout(cpu_free_s - now)
                continue
            if launched is not None:
                in_flight.append(launched)
            output, cost, timing = in_flight.popleft()
            update_end_s = clock.update_end_s(cpu_free_s, timing, output.num_reqs)
            yield env.timeout(update_end_s - now)
            self._apply(output, cost, timing, update_end_s)

    def _schedule_and_launch(self, now: float) -> tuple[SchedulerOutput, StepCost, StepTiming] | None:
        output = self.scheduler.schedule(now)
        batch = output.batch
        if batch.num_tokens == 0:
            return None
        spec = output.spec_batch
        if spec is None:
            cost = self.cost_model.step_cost(batch)
            timing = self.clock.launch(
                now, batch.num_tokens, output.num_reqs, batch.num_decode_seqs, cost.gpu_time_s,
                cost.stage_times_s,
            )
            return output, cost, timing
        assert self.spec_cost_model is not None
        cost = self.spec_cost_model.step_cost(batch, spec)
        shape = spec.launch_shape(batch.num_tokens, self.clock.capture_size)
        return output, cost, self.clock.launch(now, *shape, cost.gpu_time_s)

    def _apply(self, output: SchedulerOutput, cost: StepCost, timing: StepTiming, update_end_s: float) -> None:
        scheduler = self.scheduler
        kv = scheduler.kv_cache_manager
        finished = scheduler.update_from_output(output)
        self._poll_connector()
        delivery_s = self.clock.emit_s(update_end_s, output.num_outputs)
        cpu_time_s = timing.cpu_time_s + self.clock.costs.update_time_s(output.num_reqs)
        self.recorder.record_step(
            self.replica_id, self.num_steps, output, cost, timing, update_end_s, cpu_time_s,
            len(scheduler.running), len(scheduler.waiting), kv.num_used_blocks, kv.usage,
        )  # fmt: skip
        self.num_steps += 1
        if self.stats is not None:
            self.stats.add_step(timing, cost, kv.usage)
        if self.horizon_s is not None and delivery_s >= self.horizon_s:
            # The client never sees this step's tokens: they are not counted as generated.
            for request in output.decodes:
                request.num_undelivered_tokens += 1
            for request in output.sampling:
                request.num_undelivered_tokens += 1
            for request, emitted in zip(output.spec_decodes, output.spec_num_emitted):
                request.num_undelivered_tokens += emitted
            self.undelivered.extend(finished)
            return
        self.recorder.record_tokens(self.replica_id, output, delivery_s)
        for request in finished:
            self.num_outstanding -= 1
            if self.records_finish:
                self.recorder.record_finished(request)
            else:
                request.finish_s = request.last_token_s
            if self.on_finish is not None:  # the client learns it when the last token arrives
                delay_s = request.finish_s - self.env.now
                if delay_s > 0.0:
                    self.env.timeout(delay_s).callbacks.append(lambda _, r=request: self.on_finish(r))
                else:
                    self.on_finish(request)
        if self.on_step is not None:
            self.on_step(self.env.now, len(self.recorder.requests.ttft_s))

    def _stuck(self, now: float) -> None:
        scheduler = self.scheduler
        raise RuntimeError(
            f"replica {self.replica_id}: unfinished requests but nothing schedulable at"
            f" t={now:.6f}s (running={len(scheduler.running)}, waiting={len(scheduler.waiting)},"
            f" free blocks={scheduler.kv_cache_manager.block_pool.get_num_free_blocks()})"
        )


class Router(Protocol):
    def route(self, replicas: list[Replica], request: Request) -> int: ...


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
    """A request arrives: the router picks its replica (or the P/D proxy, sim.deploy.proxy),
    which counts the arrival."""
    replicas[router.route(replicas, request)].add_request(request)
