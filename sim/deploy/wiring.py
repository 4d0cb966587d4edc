"""Builds a deployment's engines for one run: per pool a cost model and engine-time profile,
per replica a scheduler, KV cache and engine loop; the routers; for P/D the connectors, the
link network and the proxy. What the traffic side sends to (`entry_points`, `router`) and what
the run reads back at the end (`pending`, per-pool figures) live here too."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import simpy

from sim.core.engine_clock import EngineClock
from sim.core.kv_cache_manager import KVCacheManager
from sim.core.request import Request
from sim.core.scheduler import Scheduler
from sim.core.spec_decode import spec_capture_size
from sim.cost.drafter import SpeculativeCostModel
from sim.engine_build import engine_clock, engine_scheduler
from sim.kv_offload.connector import OffloadingConnector
from sim.cost.batch import BatchSummary
from sim.cost.engine_costs import EngineCosts, max_cudagraph_capture_size
from sim.cost.engine_profiles import load_engine_costs
from sim.cost.power_cap import PowerCappedCostModel
from sim.cost.roofline import build_cost_model
from sim.deploy.pd_connector import ConsumerConnector, PDTransfers, ProducerConnector
from sim.deploy.proxy import DisaggregatedProxy
from sim.deploy.spec import DeploymentSpec, PoolSpec
from sim.deploy.transfer import KVTransferService
from sim.metrics.pools import ReplicaStats
from sim.router import make_router
from sim.simulation import Replica

REFERENCE_BATCH = 64  # decode batch and context at which capacities are compared
REFERENCE_CONTEXT = 1024


@dataclass
class PoolEngines:
    pool: PoolSpec
    cost_model: Any
    engine_costs: EngineCosts
    replicas: list[Replica] = field(default_factory=list)


class EntryRouter:
    """The traffic side's router when a proxy is the single entry point."""

    def route(self, entries: Any, request: Any = None) -> int:
        return 0


@dataclass
class Deployment:
    spec: DeploymentSpec
    pools: list[PoolEngines]
    replicas: list[Replica]
    entry_points: list[Any]
    router: Any
    proxy: DisaggregatedProxy | None = None
    transfers: PDTransfers | None = None
    spec_cost_models: list[SpeculativeCostModel] = field(default_factory=list)  # one per replica

    def pending(self) -> Iterator[Request]:
        """Client requests still in flight, each once (its latest leg for P/D). One at a time:
        a waiting queue holds its deep requests packed (sim.core.waiting_queue), and millions
        of them as objects at once would take gigabytes."""
        if self.proxy is not None:
            yield from list(self.proxy.in_flight.values())
            return
        for replica in self.replicas:
            s = replica.scheduler
            yield from s.running
            yield from s.waiting
            yield from replica.in_transit.values()
            yield from replica.undelivered


def build_deployment_engines(
    spec: Any, env: simpy.Environment, recorder: Any, on_step: Callable[..., None], engine_rng: Callable[[int, int], np.random.Generator]
) -> Deployment:
    """`spec`: the run's RunSpec (sim.config.build)."""
    dep: DeploymentSpec = spec.deployment
    multi = not dep.classic or len(dep.pools) > 1
    pools = []
    for pool in dep.pools:
        # The run's own layout (PP, DP, EP) applies to the classic single pool only: deployment
        # pools are TP groups (sim.config.build refuses the mix).
        layout = spec.parallel if dep.classic else None
        cost_model = build_cost_model(spec.model, pool.hardware, pool.precision, pool.tp, spec.cost, layout)
        peak = pool.hardware.peak_flops[pool.precision.activation_dtype]
        if pool.hardware.tdp_w > 0.0 and pool.hardware.boost_clock_mhz > 0.0:
            cost_model = PowerCappedCostModel.from_specs(cost_model, pool.hardware, peak)
        engine_costs = load_engine_costs(
            pool.hardware, spec.cost.step_overhead_ms * 1e-3, chosen=spec.cost.engine_profile
        ).for_layers(spec.model.num_hidden_layers)
        pools.append(PoolEngines(pool, cost_model, engine_costs))
    capacities = [_capacity(p) if multi else 1.0 for p in pools]
    replicas: list[Replica] = []
    spec_cost_models: list[SpeculativeCostModel] = []
    speculative = spec.speculative  # the classic pool only (sim.config.build refuses the rest)
    for engines, capacity in zip(pools, capacities):
        pool = engines.pool
        capture = max_cudagraph_capture_size(pool.scheduler.max_num_seqs, pool.scheduler.max_num_batched_tokens)
        if speculative is not None:
            capture = spec_capture_size(
                pool.scheduler.max_num_seqs, pool.scheduler.max_num_batched_tokens,
                speculative.decode.num_speculative_tokens,
            )  # fmt: skip
        for replica_id in pool.replica_ids:
            rng = engine_rng(spec.seed, replica_id)
            spec_cost_model = None
            if dep.classic:
                scheduler = engine_scheduler(
                    spec, _offloading_connector(spec, env),
                    speculative.decode if speculative is not None else None,
                    _spec_rng(spec.seed, replica_id) if speculative is not None else None,
                )  # fmt: skip
                if speculative is not None:
                    spec_cost_model = _spec_cost_model(spec, engines.cost_model)
                    spec_cost_models.append(spec_cost_model)
                clock = engine_clock(spec, engines.engine_costs, capture, rng, scheduler)
                depth = spec.parallel.max_concurrent_batches(spec.async_scheduling, not spec.model.is_moe)
            else:
                kv = KVCacheManager(
                    pool.memory.num_gpu_blocks, spec.block_size, pool.scheduler.max_model_len,
                    spec.enable_prefix_caching,
                )  # fmt: skip
                scheduler = Scheduler(pool.scheduler, kv)
                clock = EngineClock(engines.engine_costs, capture, rng)
                depth = 2 if spec.async_scheduling else 1
            replica = Replica(
                replica_id, env, scheduler, engines.cost_model, recorder, clock,
                async_scheduling=spec.async_scheduling, on_step=on_step,
                max_waiting_requests=spec.max_waiting_requests, horizon_s=spec.horizon_s,
                capacity=capacity, records_finish=pool.role != "prefill",
                max_concurrent_batches=depth, spec_cost_model=spec_cost_model,
            )  # fmt: skip
            _wire_offload(env, replica)
            if multi:
                replica.stats = ReplicaStats()
            engines.replicas.append(replica)
            replicas.append(replica)
    if not dep.disaggregated:
        router = make_router(dep.router, replicas, dep.cache_aware)
        return Deployment(dep, pools, replicas, replicas, router, spec_cost_models=spec_cost_models)
    service = KVTransferService(env, dep.placements)
    layout = {r: (e.pool.precision, e.pool.tp) for e in pools if e.pool.role == "decode" for r in e.pool.replica_ids}
    transfers = PDTransfers(service, spec.model, spec.block_size, layout)
    prefill = [r for e in pools if e.pool.role == "prefill" for r in e.replicas]
    decode = [r for e in pools if e.pool.role == "decode" for r in e.replicas]
    for replica in prefill:
        replica.scheduler.connector = ProducerConnector(transfers, replica.replica_id, replica.wake)
    for replica in decode:
        replica.scheduler.connector = ConsumerConnector(
            transfers, replica.replica_id, lambda: env.now, replica.wake
        )
    proxy = DisaggregatedProxy(
        prefill, decode,
        make_router(dep.prefill_router, prefill, dep.cache_aware),
        make_router(dep.decode_router, decode, dep.cache_aware),
        transfers, lambda: env.now,
    )  # fmt: skip
    return Deployment(dep, pools, replicas, [proxy], EntryRouter(), proxy, transfers)


SPEC_STREAM = 0x5D  # spawn-key tag of the rejection sampler's streams


def _spec_rng(seed: int, replica_id: int) -> np.random.Generator:
    """Replica `replica_id`'s acceptance draws, apart from the workload and launch streams."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(SPEC_STREAM, replica_id)))


def _spec_cost_model(spec: Any, cost_model: Any) -> SpeculativeCostModel:
    """One speculative pricer per replica (each keeps its drafter totals)."""
    drafter = spec.speculative.drafter
    head = build_cost_model(spec.model, spec.hardware, spec.precision, spec.tp, spec.cost)
    drafter_cost = (
        build_cost_model(drafter.model, spec.hardware, spec.precision, drafter.tp, spec.cost)
        if drafter.model is not None
        else None
    )
    return SpeculativeCostModel(cost_model, head, drafter, drafter_cost)


def _offloading_connector(spec: Any, env: simpy.Environment) -> OffloadingConnector | None:
    return None if spec.kv_offload is None else OffloadingConnector(spec.kv_offload, lambda: env.now)


def _wire_offload(env: simpy.Environment, replica: Replica) -> None:
    """An offloading connector's load that lands while the engine is idle wakes it."""
    connector = replica.scheduler.connector
    if not isinstance(connector, OffloadingConnector):
        return

    def wake_at(at_s: float) -> None:
        env.timeout(max(0.0, at_s - env.now)).callbacks.append(lambda _: replica.wake())

    connector.wake_at = wake_at


def _capacity(engines: PoolEngines) -> float:
    """Decode tokens/s of one replica at a reference batch (REFERENCE_BATCH requests of
    REFERENCE_CONTEXT tokens, or max_num_seqs if fewer), GPU time only: the figure routers use
    to weigh replicas of different GPUs, precisions and TP sizes against each other."""
    batch = min(REFERENCE_BATCH, engines.pool.scheduler.max_num_seqs)
    summary = BatchSummary(num_decode_seqs=batch, decode_context_tokens=batch * REFERENCE_CONTEXT)
    step = engines.cost_model.step_cost(summary)
    return batch / step.time_s
