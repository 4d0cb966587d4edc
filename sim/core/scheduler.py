"""Continuous batching under one token budget per step, as vLLM's v1 scheduler does it.

Behaviour matched: vLLM `vllm/v1/core/sched/scheduler.py`, FCFS policy, no speculative decoding,
no encoder inputs, no KV connector (v0.11.0; the same logic stands on main at 00024d31).

There is no prefill phase and no decode phase: every request's `num_computed_tokens` catches
up with its `num_tokens` under one budget of `max_num_batched_tokens` tokens per step.

1. Running requests, oldest first: each asks for all its missing tokens (1 for a decode, the
   rest of the prompt for a chunked prefill), clipped to the budget left. When the KV cache
   cannot give it the blocks, the newest running request is preempted (its blocks freed, its
   progress dropped, and it goes to the front of the waiting queue), until the request fits
   or has preempted itself.
2. Waiting requests, in queue order, only if nobody was preempted this step: admitted while
   there is budget, fewer than `max_num_seqs` are running, and the KV cache has room; a
   prefix-cache hit starts the request past its cached tokens.

DIVERGENCE: vLLM calls `allocate_slots` for every running request each step; without prefix
caching we skip the call when the request's blocks already hold the new tokens, which is the
same decision without the call.
"""

from __future__ import annotations

from array import array
from collections import deque
from dataclasses import dataclass

from sim.core.kv_cache_manager import KVCacheManager
from sim.core.request import Request, RequestStatus
from sim.cost.batch import BatchSummary


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    max_num_batched_tokens: int
    max_num_seqs: int
    max_model_len: int
    enable_chunked_prefill: bool = True
    long_prefill_token_threshold: int = 0


@dataclass(slots=True)
class SchedulerOutput:
    scheduled: list[Request]
    num_scheduled_tokens: list[int]
    preempted: list[Request]
    batch: BatchSummary

    @property
    def total_num_scheduled_tokens(self) -> int:
        return sum(self.num_scheduled_tokens)


class Scheduler:
    def __init__(self, config: SchedulerConfig, kv_cache_manager: KVCacheManager) -> None:
        self.config = config
        self.kv_cache_manager = kv_cache_manager
        self.running: list[Request] = []
        self.waiting: deque[Request] = deque()
        # Inter-token latencies of every output token after a request's first, in seconds.
        self.itl_s = array("d")
        self.num_preemptions = 0

    # ---- queue ---------------------------------------------------------------------------

    def add_request(self, request: Request) -> None:
        self.waiting.append(request)

    def has_unfinished_requests(self) -> bool:
        return bool(self.running) or bool(self.waiting)

    def rejection_reason(self, num_prompt_tokens: int, max_tokens: int) -> str:
        """Why a request can never run here, or "" when it can."""
        total = num_prompt_tokens + max_tokens
        if total > self.config.max_model_len:
            return (
                f"prompt ({num_prompt_tokens}) + output ({max_tokens}) = {total} tokens exceeds"
                f" max_model_len {self.config.max_model_len}"
            )
        kv = self.kv_cache_manager
        if kv.blocks_needed(total) > kv.num_usable_blocks:
            return (
                f"{total} tokens need {kv.blocks_needed(total)} KV blocks but the whole cache"
                f" has {kv.num_usable_blocks}"
            )
        return ""

    # ---- one step ------------------------------------------------------------------------

    def schedule(self, now: float) -> SchedulerOutput:
        cfg = self.config
        kv = self.kv_cache_manager
        block_size = kv.block_size
        caching = kv.enable_caching
        threshold = cfg.long_prefill_token_threshold
        token_budget = cfg.max_num_batched_tokens
        scheduled: list[Request] = []
        num_scheduled: list[int] = []
        preempted: list[Request] = []

        running = self.running
        index = 0
        while index < len(running) and token_budget > 0:
            request = running[index]
            num_computed = request.num_computed_tokens
            num_new = request.num_prompt_tokens + request.num_output_tokens - num_computed
            if 0 < threshold < num_new:
                num_new = threshold
            num_new = min(num_new, token_budget, cfg.max_model_len - 1 - num_computed)
            if num_new <= 0:
                index += 1
                continue
            needs_blocks = -(-(num_computed + num_new) // block_size) > len(request.block_ids)
            if caching or needs_blocks:
                while not kv.allocate_slots(request, num_new):
                    victim = running.pop()
                    self._preempt(victim)
                    preempted.append(victim)
                    if victim is request:
                        break
                if request.status != RequestStatus.RUNNING:
                    break
            scheduled.append(request)
            num_scheduled.append(num_new)
            token_budget -= num_new
            index += 1

        if not preempted:
            token_budget = self._schedule_waiting(now, token_budget, scheduled, num_scheduled)

        assert token_budget >= 0 and len(running) <= cfg.max_num_seqs
        return SchedulerOutput(scheduled, num_scheduled, preempted, _summarize(scheduled, num_scheduled))

    def _schedule_waiting(
        self, now: float, token_budget: int, scheduled: list[Request], num_scheduled: list[int]
    ) -> int:
        cfg = self.config
        kv = self.kv_cache_manager
        waiting = self.waiting
        running = self.running
        threshold = cfg.long_prefill_token_threshold
        while waiting and token_budget > 0 and len(running) < cfg.max_num_seqs:
            request = waiting[0]
            hit_blocks, num_hit_tokens = kv.get_computed_blocks(request)
            num_new = request.num_tokens - num_hit_tokens
            if 0 < threshold < num_new:
                num_new = threshold
            if not cfg.enable_chunked_prefill and num_new > token_budget:
                break
            num_new = min(num_new, token_budget)
            if not kv.allocate_slots(request, num_new, num_hit_tokens, hit_blocks):
                break
            waiting.popleft()
            running.append(request)
            request.status = RequestStatus.RUNNING
            request.num_computed_tokens = num_hit_tokens
            if request.num_cached_tokens < 0:
                request.num_cached_tokens = num_hit_tokens
            if request.first_scheduled_s < 0.0:
                request.first_scheduled_s = now
            scheduled.append(request)
            num_scheduled.append(num_new)
            token_budget -= num_new
        return token_budget

    def _preempt(self, request: Request) -> None:
        self.kv_cache_manager.free(request)
        request.status = RequestStatus.PREEMPTED
        request.num_computed_tokens = 0
        request.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(request)

    def update_from_output(self, output: SchedulerOutput, now: float) -> list[Request]:
        """Advance the scheduled requests by the step that just ended; return the finished."""
        finished: list[Request] = []
        itl_append = self.itl_s.append
        max_model_len = self.config.max_model_len
        for request, num_new in zip(output.scheduled, output.num_scheduled_tokens):
            request.num_computed_tokens += num_new
            if request.num_computed_tokens < request.num_prompt_tokens + request.num_output_tokens:
                continue  # a prefill chunk that did not reach the end: nothing sampled
            request.num_output_tokens += 1
            if request.first_token_s < 0.0:
                request.first_token_s = now
            else:
                itl_append(now - request.last_token_s)
            request.last_token_s = now
            if (
                request.num_output_tokens >= request.max_tokens
                or request.num_prompt_tokens + request.num_output_tokens >= max_model_len
            ):
                request.status = RequestStatus.FINISHED
                request.finish_s = now
                self.kv_cache_manager.free(request)
                finished.append(request)
        if finished:
            self.running = [r for r in self.running if r.status == RequestStatus.RUNNING]
        return finished


def _summarize(scheduled: list[Request], num_scheduled: list[int]) -> BatchSummary:
    """Aggregate a step's work for the cost model. A one-token step of a request with context
    is a decode (vLLM's attention backends split decodes from prefills the same way)."""
    prefill_tokens = prefill_seqs = prefill_kv = 0
    pairs = 0.0
    decodes = decode_ctx = max_ctx = 0
    for request, q in zip(scheduled, num_scheduled):
        p = request.num_computed_tokens
        if q == 1 and p > 0:
            decodes += 1
            decode_ctx += p
            if p > max_ctx:
                max_ctx = p
        else:
            prefill_tokens += q
            prefill_seqs += 1
            pairs += q * p + q * (q + 1) / 2
            prefill_kv += p + q
    return BatchSummary(
        num_prefill_tokens=prefill_tokens,
        num_prefill_seqs=prefill_seqs,
        prefill_attn_pairs=pairs,
        prefill_kv_tokens=prefill_kv,
        num_decode_seqs=decodes,
        decode_context_tokens=decode_ctx,
        max_decode_context=max_ctx,
    )
