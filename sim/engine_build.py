"""One engine's scheduler and clock for its parallel layout: the plain ones for a single
stage without DP attention, the pipeline scheduler (a request samples once every pp steps)
and the parallel clock (stages, per-rank CPU costs) otherwise."""

from __future__ import annotations

import numpy as np

from sim.config.build import RunSpec
from sim.core.engine_clock import EngineClock, ParallelEngineClock
from sim.core.kv_cache_manager import KVCacheManager
from sim.core.kv_connector import KVConnector
from sim.core.pipeline_scheduler import PipelineScheduler
from sim.core.scheduler import Scheduler
from sim.core.spec_decode import SpecDecodeConfig
from sim.cost.engine_costs import EngineCosts


def engine_scheduler(
    spec: RunSpec,
    connector: KVConnector | None = None,
    spec_decode: SpecDecodeConfig | None = None,
    spec_rng: np.random.Generator | None = None,
) -> Scheduler:
    kv = KVCacheManager(
        spec.memory.num_engine_blocks,
        spec.block_size,
        spec.scheduler.max_model_len,
        spec.enable_prefix_caching,
    )
    if spec.parallel.pp > 1:
        return PipelineScheduler(spec.scheduler, kv, spec.parallel.pp, connector)
    return Scheduler(spec.scheduler, kv, connector, spec_decode, spec_rng)


def engine_clock(
    spec: RunSpec, costs: EngineCosts, capture_size: int, rng: np.random.Generator, scheduler: Scheduler
) -> EngineClock:
    layout = spec.parallel
    if layout.pp == 1 and layout.dp == 1:
        return EngineClock(costs, capture_size, rng)
    pipeline = scheduler if isinstance(scheduler, PipelineScheduler) else None
    return ParallelEngineClock(costs, capture_size, rng, pp=layout.pp, dp=layout.dp, scheduler=pipeline)
