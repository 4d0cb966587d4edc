"""Continuous batching under one token budget per step, as vLLM's v1 scheduler does it.

Behaviour matched: vLLM `vllm/v1/core/sched/scheduler.py`, FCFS policy, no encoder inputs (as
read on main at commit 00024d31); speculative decoding as in vLLM 0.24.0 (`sim.core.spec_decode`
says what is matched).

There is no prefill phase and no decode phase: every request's `num_computed_tokens` catches
up with its `num_tokens` under one budget of `max_num_batched_tokens` tokens per step.

1. Running requests, oldest first: each asks for all its missing tokens (1 for a decode, the
   rest of the prompt for a chunked prefill), clipped to the budget left. When the KV cache
   cannot give it the blocks, the newest running request is preempted (its blocks freed, its
   progress dropped, and it goes to the front of the waiting queue), until the request fits
   or has preempted itself.
2. Waiting requests, in queue order, only if nobody was preempted this step: admitted while
   there is budget, fewer than `max_num_seqs` are running, and the KV cache has room; a
   prefix-cache hit starts the request past its cached tokens. With a KV connector
   (sim.core.kv_connector) the tokens it can supply follow the local hit: loaded
   asynchronously, the request gets its blocks and waits in `WAITING_FOR_REMOTE_KVS` without
   being scheduled, and is passed over (staying at its place in the queue) until the load is
   reported finished; then it resumes past the loaded tokens, recomputing the last prompt token
   when the whole prompt was loaded (its logits are needed).
   With speculative decoding a steady decode verifies its drafts: it asks for 1 + k tokens
   (`scheduled_spec_decode_tokens`, fewer drafts where the budget or max_model_len cut them),
   with KV slots for `num_lookahead_tokens` more; `update_from_output` rolls the rejected ones
   back out of `num_computed_tokens` (sim.core.spec_decode).
3. Every scheduled request's `num_computed_tokens` advances as soon as it is scheduled
   (`_update_after_schedule`); a chunk that reaches the end of the request's tokens will sample
   one, held as an output placeholder until `update_from_output` applies the step. With async
   scheduling (`vllm/v1/core/sched/async_scheduler.py`) the next step is scheduled before that:
   a request whose placeholders already reach its last token is not scheduled again, and it
   keeps its KV blocks and its `max_num_seqs` slot until its step is applied.

Token timing is not the scheduler's business: it only says which requests sampled a token
(`SchedulerOutput.decodes` and `.sampling`) and which finished; the engine loop decides when the
tokens reach the client (sim.simulation) and the recorder keeps the latencies.

DIVERGENCE: vLLM calls `allocate_slots` for every running request each step; we skip the call
when it would change nothing: the request's blocks already hold the new tokens and (with prefix
caching) no block becomes full. For a decode that is every step but two in a block's 16.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from sim.core.kv_cache_manager import KVCacheManager
from sim.core.kv_connector import KVConnector
from sim.core.request import Request, RequestStatus
from sim.core.spec_decode import (
    SpecBatch,
    SpecDecodeConfig,
    SpecDecodingStats,
    SyntheticRejectionSampler,
)
from sim.core.waiting_queue import WaitingQueue
from sim.cost.batch import BatchSummary


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    max_num_batched_tokens: int
    max_num_seqs: int
    max_model_len: int
    enable_chunked_prefill: bool = True
    long_prefill_token_threshold: int = 0
    # vLLM 0.24.0's default: a waiting request is admitted only if its whole sequence so far
    # fits in the free blocks, not just its first chunk (KVCacheManager.allocate_slots).
    scheduler_reserve_full_isl: bool = True


@dataclass(slots=True)
class SchedulerOutput:
    """What one step runs. Steady decodes (one token for a request that already has output)
    are kept apart from the rest because applying them is the hot path of the simulator."""

    decodes: list[Request]
    others: list[Request]  # prefill chunks, recomputation, first tokens after a cache hit
    others_num_tokens: list[int]
    sampling: list[Request]  # those of `others` whose chunk reaches the end: they sample a token
    preempted: list[Request]
    batch: BatchSummary
    # Speculative decoding (empty without it): steady decodes that verify drafts, their
    # scheduled draft counts (vLLM's scheduled_spec_decode_tokens), what the drafter and the
    # verify cost, and, once applied, the tokens each one delivered (1 + accepted, cut at the
    # request's end; 0 for a request that had finished meanwhile).
    spec_decodes: Sequence[Request] = ()
    spec_num_drafts: Sequence[int] = ()
    spec_batch: SpecBatch | None = None
    spec_num_emitted: Sequence[int] = ()
    # Steady decodes whose token fills a KV block (prefix caching): published once applied.
    filled: Sequence[Request] = ()

    @property
    def num_reqs(self) -> int:
        return len(self.decodes) + len(self.others) + len(self.spec_decodes)

    @property
    def num_outputs(self) -> int:
        """Requests that receive tokens from this step."""
        return len(self.decodes) + len(self.sampling) + len(self.spec_decodes)

    @property
    def num_sampled_tokens(self) -> int:
        """Tokens this step delivered (known once it is applied)."""
        return len(self.decodes) + len(self.sampling) + sum(self.spec_num_emitted)

    @property
    def scheduled(self) -> list[Request]:
        return self.decodes + self.others + list(self.spec_decodes)

    @property
    def num_scheduled_tokens(self) -> list[int]:
        return (
            [1] * len(self.decodes)
            + self.others_num_tokens
            + [1 + d for d in self.spec_num_drafts]
        )


class Scheduler:
    def __init__(
        self,
        config: SchedulerConfig,
        kv_cache_manager: KVCacheManager,
        connector: KVConnector | None = None,
        spec_decode: SpecDecodeConfig | None = None,
        spec_rng: np.random.Generator | None = None,
    ) -> None:
        """`connector`: KV from outside this engine (sim.core.kv_connector; None: none);
        `spec_decode`: speculative decoding (None: off); `spec_rng`: the stream its
        acceptance draws come from (the replica's own, for byte-identical runs)."""
        self.config = config
        self.kv_cache_manager = kv_cache_manager
        self.connector = connector
        self.running: list[Request] = []
        # FCFS, deque-like; never-scheduled requests deep in it are packed (sim.core.waiting_queue).
        self.waiting = WaitingQueue()
        self.num_preemptions = 0
        # KV connector state (vLLM's names): loads reported finished, not yet resumed; requests
        # waiting for a load; finished requests whose blocks the connector is still sending.
        self.finished_recving_kv_req_ids: set[int] = set()
        self.num_waiting_for_remote_kvs = 0
        self.sending: dict[int, Request] = {}
        self._finished_in_queue = False
        self.spec_decode = spec_decode
        self.spec_decoding_stats: SpecDecodingStats | None = None
        self._rejection_sampler: SyntheticRejectionSampler | None = None
        if spec_decode is not None:
            k = spec_decode.num_speculative_tokens
            self.spec_decoding_stats = SpecDecodingStats(k)
            rng = spec_rng if spec_rng is not None else np.random.default_rng(0)
            self._rejection_sampler = SyntheticRejectionSampler(spec_decode.acceptance_rates[:k], rng)

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
        filled: list[Request] = []
        scheduled: list[Request] = []
        num_scheduled: list[int] = []
        sampling: list[Request] = []
        preempted: list[Request] = []
        decode_ctx = 0
        spec = self.spec_decode
        spec_k = spec.num_speculative_tokens if spec is not None else 0
        if spec_k:
            lookahead = spec.num_lookahead_tokens
            spec_decodes: list[Request] = []
            spec_drafts: list[int] = []
            spec_rows = spec_ctx = 0

        # A steady decode (token at position num_computed) needs allocate_slots only when it
        # starts a block (num_computed % block_size == 0) or, with prefix caching, also when it
        # fills one ((num_computed + 1) % block_size == 0): one test,
        # (num_computed + slot_shift) % block_size < slot_window, covers both cases.
        slot_shift, slot_window = (1, 2) if caching else (0, 1)
        # Allocation almost always succeeds; only a failed one (which changes nothing) enters
        # the preemption loop.
        allocate_slots = kv.allocate_slots
        allocate_decode_slot = kv.allocate_decode_slot

        # A for-loop over `running` stays correct while preemption pops its tail: iteration
        # stops at the shortened end, and everything before the current request is scheduled.
        running = self.running
        for request in running:
            if token_budget <= 0:
                break
            num_tokens = request.num_tokens
            if num_tokens >= request.finish_num_tokens and (
                not spec_k or num_tokens - request.num_draft_placeholders >= request.finish_num_tokens
            ):
                # Async: its last token is being sampled by the step in flight (with drafts in
                # flight: it ends even if every one of them is rejected).
                continue
            num_computed = request.num_computed_tokens
            num_new = num_tokens - num_computed
            if num_new == 1 and num_computed >= request.num_prompt_tokens:
                if spec_k:
                    # A decode that verifies its drafts: 1 + d tokens, d <= k as budget and
                    # max_model_len allow; KV slots for the drafter's lookahead as well.
                    num_drafts = min(spec_k, token_budget - 1, max_model_len - 2 - num_computed)
                    if num_drafts < 0:
                        continue
                    num_new = 1 + num_drafts
                    if (
                        num_computed + num_new + lookahead > len(request.block_ids) * block_size
                        or caching
                        and num_tokens // block_size != request.spec_slots_num_tokens // block_size
                    ):
                        n = num_new + lookahead
                        if not (allocate_slots(request, n) or self._preempt_until_fits(request, n, preempted)):
                            break
                        request.spec_slots_num_tokens = num_tokens
                    token_budget -= num_new
                    # Priced as 1 + d decode rows (query i sees num_computed + i cached
                    # tokens), the KV read once per request (sim.cost.drafter).
                    spec_rows += num_new
                    decode_ctx += num_new * num_computed + num_drafts * num_new // 2
                    spec_ctx += num_computed
                    request.num_computed_tokens = num_computed + num_new
                    request.num_tokens = num_tokens + num_new
                    request.num_output_placeholders += num_new
                    request.num_draft_placeholders += num_drafts
                    spec_decodes.append(request)
                    spec_drafts.append(num_drafts)
                    continue
                # A steady decode (it has output already), the hot path of the simulator. One
                # more token needs a new block only at a block boundary, and (with prefix
                # caching) publishes a block only when it fills one: otherwise allocate_slots
                # would change nothing.
                if (num_computed + slot_shift) % block_size < slot_window:
                    if not (allocate_decode_slot(request) or self._preempt_until_fits(request, 1, preempted)):
                        break
                    if caching and not (num_computed + 1) % block_size:
                        filled.append(request)  # its block is published when the step lands
                token_budget -= 1
                decode_ctx += num_computed
                request.num_computed_tokens = num_tokens
                request.num_tokens = num_tokens + 1
                request.num_output_placeholders += 1
                decoding_append(request)
                continue
            if 0 < threshold < num_new:
                num_new = threshold
            num_new = min(num_new, token_budget, max_model_len - 1 - num_computed)
            if num_new <= 0:
                continue
            needs_blocks = num_computed + num_new > len(request.block_ids) * block_size
            if (caching or needs_blocks) and not (
                allocate_slots(request, num_new) or self._preempt_until_fits(request, num_new, preempted)
            ):
                break
            token_budget -= num_new
            batch.add(num_computed, num_new)
            scheduled.append(request)
            num_scheduled.append(num_new)

        if not preempted and self.waiting:  # an empty queue admits nothing: no call
            token_budget = self._schedule_waiting(
                now, token_budget, scheduled, num_scheduled, batch
            )
        # vLLM's _update_after_schedule for the non-decodes (the decodes were advanced above).
        # Preemption only takes requests the running loop has not reached yet, so none of
        # these was reset after being scheduled.
        for index, request in enumerate(scheduled):
            num_computed = request.num_computed_tokens + num_scheduled[index]
            request.num_computed_tokens = num_computed
            if num_computed == request.num_tokens:
                request.num_tokens = num_computed + 1
                request.num_output_placeholders += 1
                sampling.append(request)

        assert token_budget >= 0 and len(running) <= cfg.max_num_seqs
        output = SchedulerOutput(
            decoding,
            scheduled,
            num_scheduled,
            sampling,
            preempted,
            batch.summary(len(decoding) + (spec_rows if spec_k else 0), decode_ctx),
        )
        if filled:
            output.filled = filled
        if spec_k:
            output.spec_decodes = spec_decodes
            output.spec_num_drafts = spec_drafts
            output.spec_batch = SpecBatch.of(output, spec_k, spec_ctx)
        if self.connector is not None:
            self.connector.build_connector_meta(output)
        return output

    def _preempt_until_fits(
        self, request: Request, num_new: int, preempted: list[Request]
    ) -> bool:
        """After `allocate_slots` failed: preempt the newest running requests until `num_new`
        more tokens fit; False when the request had to preempt itself."""
        allocate_slots = self.kv_cache_manager.allocate_slots
        running = self.running
        while True:
            if (
                self.connector is not None
                and len(running) == 1  # the request alone: nothing else runs to free blocks
                and self._release_loaded_blocks(request)
            ):
                if allocate_slots(request, num_new):
                    return True
                continue  # nothing more to release: it preempts itself
            victim = running.pop()
            self._preempt(victim)
            preempted.append(victim)
            if victim is request:
                return False
            if allocate_slots(request, num_new):
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
        connector = self.connector
        skipped: list[Request] = []  # waiting for a load: passed over, put back in order
        while waiting and token_budget > 0 and len(running) < cfg.max_num_seqs:
            request = waiting[0]
            if request.status == RequestStatus.WAITING_FOR_REMOTE_KVS:
                if not self._update_waiting_for_remote_kv(request):
                    skipped.append(waiting.popleft())
                    continue
                request.status = (
                    RequestStatus.PREEMPTED if request.num_preemptions else RequestStatus.WAITING
                )
            load_kv_async = False
            num_external = 0
            if request.num_computed_tokens == 0:
                hit_blocks, num_hit_tokens = kv.get_computed_blocks(request)
                if connector is not None:
                    matched, load_kv_async = connector.get_num_new_matched_tokens(
                        request, num_hit_tokens
                    )
                    if matched is None:  # the connector cannot tell yet: passed over this step
                        skipped.append(waiting.popleft())
                        continue
                    num_external = matched
                    request.num_external_computed_tokens = num_external
                    assert num_external > 0 or not load_kv_async, "an async load of no tokens"
                num_computed = num_hit_tokens + num_external
            else:  # its KV was loaded by a connector
                hit_blocks, num_hit_tokens = [], 0
                num_computed = request.num_computed_tokens
            if load_kv_async:
                num_new = 0  # blocks for the loaded tokens only, no work this step
            else:
                num_new = request.num_tokens - num_computed
                if 0 < threshold < num_new:
                    num_new = threshold
                if not cfg.enable_chunked_prefill and num_new > token_budget:
                    break
                num_new = min(num_new, token_budget)
            if not kv.allocate_slots(
                request, num_new, num_hit_tokens, hit_blocks, num_external, load_kv_async,
                full_sequence_must_fit=cfg.scheduler_reserve_full_isl,
            ):
                if connector is not None and not running and self._release_loaded_blocks(request):
                    continue  # the head again, with the blocks of loaded requests behind it freed
                break
            if connector is not None:
                connector.update_state_after_alloc(request, num_external)
            waiting.popleft()
            if load_kv_async:
                request.status = RequestStatus.WAITING_FOR_REMOTE_KVS
                self.num_waiting_for_remote_kvs += 1
                skipped.append(request)
                continue
            running.append(request)
            request.status = RequestStatus.RUNNING
            request.num_computed_tokens = num_computed
            if request.num_cached_tokens < 0:
                request.num_cached_tokens = num_computed
            if request.first_scheduled_s < 0.0:
                request.first_scheduled_s = now
            scheduled.append(request)
            num_scheduled.append(num_new)
            token_budget -= num_new
            batch.add(num_computed, num_new)
        if skipped:
            waiting.extendleft(reversed(skipped))
        return token_budget

    def _release_loaded_blocks(self, head: Request) -> bool:
        """Nothing else runs, so nothing will free blocks, and `head` cannot get its blocks
        (the head of the queue cannot be admitted, or the one running request cannot grow):
        free those of the waiting requests behind it whose loads have landed (they look up and
        load again when their turn comes). Whether any were freed.

        DIVERGENCE: vLLM has no such release; with a cache small against its requests, loaded
        requests behind a preempted one could hold every block, and its engine would stall
        (or, admitting a chunk of the head that can never grow to its end, preempt it again
        and again)."""
        kv = self.kv_cache_manager
        released = False
        for request in self.waiting.objects():  # packed requests hold no blocks
            if request is head or not request.block_ids:
                continue
            request_id = request.request_id
            if request.status == RequestStatus.WAITING_FOR_REMOTE_KVS:
                if request_id not in self.finished_recving_kv_req_ids:
                    continue  # still loading into its blocks
                self.finished_recving_kv_req_ids.discard(request_id)
                self.num_waiting_for_remote_kvs -= 1
                request.status = (
                    RequestStatus.PREEMPTED if request.num_preemptions else RequestStatus.WAITING
                )
            kv.free(request)
            request.num_computed_tokens = 0
            released = True
        return released

    def _update_waiting_for_remote_kv(self, request: Request) -> bool:
        """Whether the request's load has landed; if so its loaded blocks join the prefix
        cache and it resumes after them, recomputing the last token of a fully loaded
        sequence (vLLM's `_update_waiting_for_remote_kv`)."""
        request_id = request.request_id
        if request_id not in self.finished_recving_kv_req_ids:
            return False
        self.finished_recving_kv_req_ids.discard(request_id)
        self.num_waiting_for_remote_kvs -= 1
        kv = self.kv_cache_manager
        num_computed = min(len(request.block_ids) * kv.block_size, request.num_tokens)
        if num_computed == request.num_tokens:
            num_computed -= 1
        kv.cache_blocks(request, num_computed)
        request.num_computed_tokens = num_computed
        return True

    def update_from_kv_xfer_finished(
        self, finished_sending: set[int], finished_recving: set[int]
    ) -> None:
        """The worker side's report (vLLM's `_update_from_kv_xfer_finished`): sent requests
        release their blocks; loaded requests become schedulable at the next step."""
        for request_id in finished_recving:
            self.finished_recving_kv_req_ids.add(request_id)
        for request_id in finished_sending:
            request = self.sending.pop(request_id, None)
            if request is not None:
                self.kv_cache_manager.free(request)

    def _preempt(self, request: Request) -> None:
        # DIVERGENCE: a request whose step is in flight keeps that token's placeholder in
        # `num_tokens`, so its recomputation includes it; vLLM recomputes the known tokens and
        # receives the in-flight one afterwards (one token of difference, under KV pressure).
        self.kv_cache_manager.free(request)
        request.status = RequestStatus.PREEMPTED
        request.num_computed_tokens = 0
        request.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(request)

    def update_from_output(self, output: SchedulerOutput) -> list[Request]:
        """Apply a step that has run: its sampled tokens become real; return the finished.

        A request preempted after this step was scheduled still receives the token the step
        sampled (vLLM appends it too); if that was its last one it finishes in the queue."""
        finished: list[Request] = []
        if output.spec_decodes:
            self._apply_spec_decodes(output, finished)
        # vLLM 0.24.0's AsyncScheduler (`vllm/v1/core/sched/async_scheduler.py`) publishes a
        # running request's blocks when its tokens arrive, up to the tokens computed less those
        # still in flight, before a finish frees them: a block that this step filled is
        # published now, not at the next allocation (serially it was at schedule time, and this
        # finds nothing new).
        kv = self.kv_cache_manager
        running = RequestStatus.RUNNING
        for request in output.filled:
            if request.status == running:
                kv.cache_blocks(request, request.num_computed_tokens - request.num_output_placeholders + 1)
        for request in output.decodes:
            placeholders = request.num_output_placeholders - 1
            request.num_output_placeholders = placeholders
            if request.num_tokens - placeholders >= request.finish_num_tokens:
                self._finish(request, finished)
        caching = kv.enable_caching
        for request in output.sampling:
            placeholders = request.num_output_placeholders - 1
            request.num_output_placeholders = placeholders
            if caching and request.status == running:
                kv.cache_blocks(request, request.num_computed_tokens - placeholders)
            if request.num_tokens - placeholders >= request.finish_num_tokens:
                self._finish(request, finished)
        if finished:
            self.running = [r for r in self.running if r.status == RequestStatus.RUNNING]
            if self._finished_in_queue:  # rare: a preempted request's in-flight token was its last
                self._finished_in_queue = False
                self.waiting.remove_finished()
        return finished

    def _apply_spec_decodes(self, output: SchedulerOutput, finished: list[Request]) -> None:
        """The rejection sampler's verdict on each request's drafts, then vLLM's rollback:
        rejected drafts leave `num_computed_tokens` and the placeholders; accepted tokens past
        the request's end are dropped (vLLM's stop check truncates them)."""
        assert self._rejection_sampler is not None and self.spec_decoding_stats is not None
        stats = self.spec_decoding_stats
        num_drafts = output.spec_num_drafts
        accepted = self._rejection_sampler.num_accepted(list(num_drafts))
        kv = self.kv_cache_manager
        caching = kv.enable_caching
        emitted: list[int] = []
        for request, d, a in zip(output.spec_decodes, num_drafts, accepted):
            if request.status == RequestStatus.FINISHED:  # ended by an earlier step's tokens
                emitted.append(0)
                continue
            num_rejected = d - a
            request.num_draft_placeholders -= d
            request.num_output_placeholders -= 1 + d
            request.num_tokens -= num_rejected
            if request.num_computed_tokens > 0:  # not preempted meanwhile
                request.num_computed_tokens -= num_rejected
            if d:
                stats.observe(d, a)
            if caching and request.status == RequestStatus.RUNNING:  # as for plain decodes
                kv.cache_blocks(request, request.num_computed_tokens - request.num_output_placeholders)
            real = request.num_tokens - request.num_output_placeholders
            excess = real - request.finish_num_tokens
            emitted.append(1 + a - max(excess, 0))
            if excess >= 0:
                request.num_tokens -= excess
                self._finish(request, finished)
        output.spec_num_emitted = emitted

    def _finish(self, request: Request, finished: list[Request]) -> None:
        # Not running: preempted after its step was scheduled, so it sits in the waiting queue
        # (scanning that queue at every finish would cost O(queue) per step under overload).
        self._finished_in_queue |= request.status != RequestStatus.RUNNING
        request.status = RequestStatus.FINISHED
        if self.connector is not None and self.connector.request_finished(request):
            self.sending[request.request_id] = request  # blocks freed once the send is done
        else:
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
