"""A request's state inside one engine replica (vLLM's `vllm/v1/request.py`, names kept)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class RequestStatus(enum.IntEnum):
    WAITING = 0
    WAITING_FOR_REMOTE_KVS = 1  # blocks allocated, KV loading from a connector (sim.core.kv_connector)
    RUNNING = 2
    PREEMPTED = 3
    FINISHED = 4
    REJECTED = 5


@dataclass(slots=True, eq=False)
class Request:
    """One request. vLLM's invariant: `num_computed_tokens` catches up with `num_tokens`.

    `num_tokens` = prompt tokens + output tokens generated so far, including those still being
    sampled by a step in flight. A step schedules `num_tokens - num_computed_tokens` of them (or
    fewer, under the token budget) and advances `num_computed_tokens` at once, as vLLM's
    `_update_after_schedule` does; when a scheduled chunk reaches `num_tokens`, the step will
    sample one new output token, counted as a placeholder until the step is applied.
    After a preemption `num_computed_tokens` drops to 0 and the whole sequence, outputs
    included, is computed again as one long prefill.

    A request that waits deep in an unbounded queue, still in the state this constructor
    leaves it in, is held as a packed row instead (sim.core.waiting_queue, 64 bytes against
    about 470 for the object): a field added here must be packed or checked there
    (tests/test_waiting_queue.py fails until it is).
    """

    request_id: int
    arrival_s: float
    num_prompt_tokens: int
    max_tokens: int  # output tokens to generate (the trace's or generator's output length)
    block_hashes: tuple[int, ...] = ()  # identity of each full KV block of the prompt
    session_id: int = -1  # the client's conversation (sim.clients), -1 for open-loop requests
    turn: int = 0
    status: RequestStatus = RequestStatus.WAITING
    num_computed_tokens: int = 0
    # Tokens that scheduled steps will sample but whose step has not been applied yet: with
    # async scheduling the next step is scheduled before the last one's output is known
    # (vLLM's AsyncScheduler keeps the same count). `num_tokens` includes them.
    num_output_placeholders: int = 0
    # Speculative decoding: draft tokens of the steps in flight, counted in `num_tokens` and
    # the placeholders as if accepted (vLLM's AsyncScheduler does the same); the rejected ones
    # are taken off when their step is applied (sim.core.spec_decode).
    num_draft_placeholders: int = 0
    # num_tokens when a speculative step last asked for KV slots: with prefix caching a new
    # call publishes a block only once num_tokens has crossed a block boundary since then.
    spec_slots_num_tokens: int = 0
    num_cached_tokens: int = -1  # prefix-cache hit at first scheduling; -1 until then
    num_external_computed_tokens: int = 0  # of those, supplied by a KV connector
    # Output tokens applied by steps whose delivery falls after the run's horizon: generated in
    # the engine, never seen by the client (sim.simulation).
    num_undelivered_tokens: int = 0
    num_preemptions: int = 0
    replica_id: int = 0
    first_scheduled_s: float = -1.0
    first_token_s: float = -1.0
    last_token_s: float = -1.0
    finish_s: float = -1.0
    reject_reason: str = ""
    block_ids: list[int] = field(default_factory=list)
    # Prompt + outputs so far: the one counter the scheduler's per-step loops advance (the
    # output count derives from it), and the length at which the request is done.
    num_tokens: int = field(init=False)
    finish_num_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.num_tokens = self.num_prompt_tokens
        self.finish_num_tokens = self.num_prompt_tokens + self.max_tokens

    @property
    def num_output_tokens(self) -> int:
        """Output tokens whose step has been applied (placeholders excluded)."""
        return self.num_tokens - self.num_output_placeholders - self.num_prompt_tokens

    @property
    def is_finished(self) -> bool:
        return self.status >= RequestStatus.FINISHED
