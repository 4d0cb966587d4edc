"""Drives a Scheduler without SimPy: one step per call, fixed step time. Shared by tests."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

from sim.core.kv_cache_manager import KVCacheManager
from sim.core.request import Request
from sim.core.scheduler import Scheduler, SchedulerConfig, SchedulerOutput
from sim.metrics.token_times import TokenTimes


def make_scheduler(
    *,
    num_gpu_blocks: int = 10,
    block_size: int = 4,
    max_num_batched_tokens: int = 64,
    max_num_seqs: int = 8,
    max_model_len: int = 1024,
    enable_chunked_prefill: bool = True,
    enable_caching: bool = False,
    long_prefill_token_threshold: int = 0,
    scheduler_reserve_full_isl: bool = True,
    connector=None,
) -> Scheduler:
    kv = KVCacheManager(num_gpu_blocks, block_size, max_model_len, enable_caching)
    config = SchedulerConfig(
        max_num_batched_tokens=max_num_batched_tokens,
        max_num_seqs=max_num_seqs,
        max_model_len=max_model_len,
        enable_chunked_prefill=enable_chunked_prefill,
        long_prefill_token_threshold=long_prefill_token_threshold,
        scheduler_reserve_full_isl=scheduler_reserve_full_isl,
    )
    return Scheduler(config, kv, connector)


def req(request_id: int, prompt: int, output: int, hashes: tuple = (), arrival: float = 0.0) -> Request:
    return Request(
        request_id=request_id,
        arrival_s=arrival,
        num_prompt_tokens=prompt,
        max_tokens=output,
        block_hashes=hashes,
    )


@dataclass
class StepLog:
    step: int
    scheduled: dict[int, int]  # request_id -> tokens scheduled
    preempted: list[int]
    finished: list[int]
    blocks_used: int
    output: SchedulerOutput = field(repr=False)


_TOKEN_TIMES: weakref.WeakKeyDictionary[Scheduler, TokenTimes] = weakref.WeakKeyDictionary()


def step(scheduler: Scheduler, index: int, step_s: float = 1.0) -> StepLog:
    """Schedule at t=index*step_s, apply the step and deliver its tokens at (index+1)*step_s
    (serial engine: each step is applied before the next is scheduled)."""
    out = scheduler.schedule(index * step_s)
    scheduled = {r.request_id: n for r, n in zip(out.scheduled, out.num_scheduled_tokens)}
    blocks_used = scheduler.kv_cache_manager.num_used_blocks
    end_s = (index + 1) * step_s
    finished = scheduler.update_from_output(out)
    _TOKEN_TIMES.setdefault(scheduler, TokenTimes()).deliver(out, end_s)
    for request in finished:
        request.finish_s = request.last_token_s
    return StepLog(
        index, scheduled, [r.request_id for r in out.preempted], [r.request_id for r in finished], blocks_used, out
    )
