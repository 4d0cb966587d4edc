"""The scheduler under pipeline parallelism: a request samples at most once every pp steps.

Matched: vLLM 0.24.0 `vllm/v1/core/sched/async_scheduler.py` `_update_after_schedule`, which
under PP (model runner v2) sets `request.next_decode_eligible_step = current_step + pp_size`
for every request that samples (not for intermediate prefill chunks), and the running loop of
`scheduler.py`, which skips a request whose eligible step has not come. The sampled token of
step s is broadcast from the last stage back to the first (the slot ring of
`vllm/v1/worker/gpu/pp_utils.py`), and the first stage of a later step that decodes the
request waits for it: `dependency_step` names the latest step whose tokens this step needs,
for the engine clock.

The base scheduler is left as it is: held requests are taken out of `running` for the call
(with `max_num_seqs` lowered by their number) and put back in their places after it.
DIVERGENCE: a held request cannot be preempted during a step that skips it (vLLM may preempt
it, its token then arriving for a recomputed request); only under KV pressure with PP.
"""

from __future__ import annotations

import dataclasses

from sim.core.kv_cache_manager import KVCacheManager
from sim.core.kv_connector import KVConnector
from sim.core.scheduler import Scheduler, SchedulerConfig, SchedulerOutput


class PipelineScheduler(Scheduler):
    def __init__(
        self,
        config: SchedulerConfig,
        kv_cache_manager: KVCacheManager,
        pp: int,
        connector: KVConnector | None = None,
    ) -> None:
        super().__init__(config, kv_cache_manager, connector)
        self.pp = pp
        self.current_step = 0
        self.dependency_step = -1  # latest step whose sampled tokens the last schedule() uses
        self._eligible_at: dict[int, int] = {}  # request_id -> first step it may sample again
        self._sampled_at: dict[int, int] = {}  # request_id -> step that last sampled it

    def schedule(self, now: float) -> SchedulerOutput:
        step = self.current_step
        self.current_step = step + 1
        eligible_at = self._eligible_at
        for request_id in [r for r, s in eligible_at.items() if s <= step]:
            del eligible_at[request_id]
        held = [r for r in self.running if r.request_id in eligible_at] if eligible_at else []
        output = self._schedule_without(held, now) if held else super().schedule(now)
        sampled_at = self._sampled_at
        dependency = -1
        for request in output.decodes:
            last = sampled_at.get(request.request_id, -1)
            if last > dependency:
                dependency = last
        self.dependency_step = dependency
        until = step + self.pp
        for request in output.decodes:
            eligible_at[request.request_id] = until
            sampled_at[request.request_id] = step
        for request in output.sampling:
            eligible_at[request.request_id] = until
            sampled_at[request.request_id] = step
        return output

    def holds_requests(self) -> bool:
        """Whether a running request waits for its eligible step (an empty step is no stall)."""
        eligible_at = self._eligible_at
        return any(r.request_id in eligible_at for r in self.running)

    def _schedule_without(self, held: list, now: float) -> SchedulerOutput:
        original, config = self.running, self.config
        held_ids = {id(r) for r in held}
        self.running = [r for r in original if id(r) not in held_ids]
        self.config = dataclasses.replace(config, max_num_seqs=config.max_num_seqs - len(held))
        try:
            return super().schedule(now)
        finally:
            self.config = config
            after = self.running
            kept = {id(r) for r in after}
            before = {id(r) for r in original}
            merged = [r for r in original if id(r) in held_ids or id(r) in kept]
            merged += [r for r in after if id(r) not in before]
            self.running = merged

    def update_from_output(self, output: SchedulerOutput) -> list:
        finished = super().update_from_output(output)
        for request in finished:
            self._sampled_at.pop(request.request_id, None)
            self._eligible_at.pop(request.request_id, None)
        return finished
