"""Continuous batching under one token budget per step, as vLLM's v1 scheduler does it.

Behaviour matched: vLLM `vllm/v1/core/sched/scheduler.py`, FCFS policy, no speculative decoding,
no encoder inputs, no KV connector (as read on main at commit 00024d31).

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
caching we skip the call when the request's blocks already hold the new tokens (for a decode:
unless its context sits on a block boundary), which is the same decision without the call.
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
    """What one step runs. Steady decodes (one token for a request that already has output)
    are kept apart from the rest because applying them is the hot path of the simulator."""

    decodes: list[Request]
    others: list[Request]  # prefill chunks, recomputation, first tokens after a cache hit
    others_num_tokens: list[int]
    preempted: list[Request]
    batch: BatchSummary

    @property
    def scheduled(self) -> list[Request]:
        return self.decodes + self.others

    @property
    def num_scheduled_tokens(self) -> list[int]:
        return [1] * len(self.decodes) + self.others_num_tokens


class Scheduler:
    def __init__(self, config: SchedulerConfig, kv_cache_manager: KVCacheManager) -> None:
        self.config = config
        self.kv_cache_manager = kv_cache_manager
        self.running: list[Request] = []
        self.waiting: deque[Request] = deque()
        # Inter-token latencies of every output token after a request's first, in seconds, as
        # (value, count) pairs: a step adds one pair for all requests that also produced a
        # token in the step before, and one pair per exception.
        self.itl_s = array("d")
        self.itl_count = array("q")
        self._last_step_end_s = -1.0
        self.num_preemptions = 0

    # ---- queue ---------------------------------------------------------------------------

    def add_request(self, request: Request) -> None:
        # vLLM stops a request at max_tokens or at max_model_len, whichever comes first.
        request.finish_num_tokens = min(request.finish_num_tokens, self.config.max_model_len)
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
        max_model_len = cfg.max_model_len
        token_budget = cfg.max_num_batched_tokens
        batch = _BatchAccumulator()
        decoding: list[Request] = []
        decoding_append = decoding.append
        scheduled: list[Request] = []
        num_scheduled: list[int] = []
        preempted: list[Request] = []
        decode_ctx = 0

        # A for-loop over `running` stays correct while preemption pops its tail: iteration
        # stops at the shortened end, and everything before the current request is scheduled.
        running = self.running
        for request in running:
            if token_budget <= 0:
                break
            num_computed = request.num_computed_tokens
            num_new = request.num_tokens - num_computed
            if num_new == 1 and num_computed >= request.num_prompt_tokens:
                # A steady decode (it has output already), the hot path of the simulator. One
                # more token needs a new block only at a block boundary.
                if (caching or not num_computed % block_size) and not self._allocate_or_preempt(
                    request, 1, preempted
                ):
                    break
                token_budget -= 1
                decode_ctx += num_computed
                decoding_append(request)
                continue
            if 0 < threshold < num_new:
                num_new = threshold
            num_new = min(num_new, token_budget, max_model_len - 1 - num_computed)
            if num_new <= 0:
                continue
            needs_blocks = num_computed + num_new > len(request.block_ids) * block_size
            if (caching or needs_blocks) and not self._allocate_or_preempt(
                request, num_new, preempted
            ):
                break
            token_budget -= num_new
            batch.add(num_computed, num_new)
            scheduled.append(request)
            num_scheduled.append(num_new)

        if not preempted:
            token_budget = self._schedule_waiting(
                now, token_budget, scheduled, num_scheduled, batch
            )

        assert token_budget >= 0 and len(running) <= cfg.max_num_seqs
        return SchedulerOutput(
            decoding,
            scheduled,
            num_scheduled,
            preempted,
            batch.summary(len(decoding), decode_ctx),
        )

    def _allocate_or_preempt(
        self, request: Request, num_new: int, preempted: list[Request]
    ) -> bool:
        """Slots for `num_new` more tokens, preempting the newest running requests until they
        fit; False when the request had to preempt itself."""
        kv = self.kv_cache_manager
        running = self.running
        while not kv.allocate_slots(request, num_new):
            victim = running.pop()
            self._preempt(victim)
            preempted.append(victim)
            if victim is request:
                return False
        return True

    def _schedule_waiting(
        self,
        now: float,
        token_budget: int,
        scheduled: list[Request],
        num_scheduled: list[int],
        batch: _BatchAccumulator,
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
            batch.add(num_hit_tokens, num_new)
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
        itl_s, itl_count = self.itl_s, self.itl_count
        previous_end_s = self._last_step_end_s
        num_regular = 0  # decodes whose previous token came at the end of the previous step
        for request in output.decodes:
            num_tokens = request.num_tokens
            request.num_computed_tokens = num_tokens
            request.num_tokens = num_tokens = num_tokens + 1
            if request.last_token_s == previous_end_s:
                num_regular += 1
            else:
                itl_s.append(now - request.last_token_s)
                itl_count.append(1)
            request.last_token_s = now
            if num_tokens >= request.finish_num_tokens:
                self._finish(request, now, finished)
        if num_regular:
            itl_s.append(now - previous_end_s)
            itl_count.append(num_regular)
        for request, num_new in zip(output.others, output.others_num_tokens):
            num_computed = request.num_computed_tokens + num_new
            request.num_computed_tokens = num_computed
            if num_computed < request.num_tokens:
                continue  # a prefill chunk that did not reach the end: nothing sampled
            request.num_tokens = num_tokens = num_computed + 1
            if request.first_token_s < 0.0:
                request.first_token_s = now
            else:  # the first token after a recomputation
                itl_s.append(now - request.last_token_s)
                itl_count.append(1)
            request.last_token_s = now
            if num_tokens >= request.finish_num_tokens:
                self._finish(request, now, finished)
        self._last_step_end_s = now
        if finished:
            self.running = [r for r in self.running if r.status == RequestStatus.RUNNING]
        return finished

    def _finish(self, request: Request, now: float, finished: list[Request]) -> None:
        request.status = RequestStatus.FINISHED
        request.finish_s = now
        self.kv_cache_manager.free(request)
        finished.append(request)


class _BatchAccumulator:
    """Sums a step's work for the cost model. A one-token step of a request with context is a
    decode, anything else a prefill chunk (vLLM's attention backends split them the same way).
    The running loop sums its decodes in local variables and hands them to `summary`."""

    __slots__ = ("tokens", "seqs", "pairs", "kv_tokens", "decodes", "decode_ctx")

    def __init__(self) -> None:
        self.tokens = self.seqs = self.kv_tokens = 0
        self.decodes = self.decode_ctx = 0
        self.pairs = 0.0

    def add(self, p: int, q: int) -> None:
        """q new tokens after p tokens already in the cache (see BatchSummary)."""
        if q == 1 and p:
            self.decodes += 1
            self.decode_ctx += p
            return
        self.tokens += q
        self.seqs += 1
        self.pairs += q * p + q * (q + 1) / 2
        self.kv_tokens += p + q

    def summary(self, decodes: int, decode_ctx: int) -> BatchSummary:
        return BatchSummary(
            num_prefill_tokens=self.tokens,
            num_prefill_seqs=self.seqs,
            prefill_attn_pairs=self.pairs,
            prefill_kv_tokens=self.kv_tokens,
            num_decode_seqs=self.decodes + decodes,
            decode_context_tokens=self.decode_ctx + decode_ctx,
        )
