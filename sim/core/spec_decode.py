"""Speculative decoding inside the engine: how many draft tokens a step verifies, how many of
them the target accepts, and vLLM's counters of both.

Behaviour matched, vLLM 0.24.0:
- `vllm/v1/core/sched/scheduler.py`: a running request with draft tokens (`spec_token_ids`)
  asks for `1 + len(spec_token_ids)` tokens (`num_tokens_with_spec`); the drafts that fit the
  token budget and `max_model_len` become its `scheduled_spec_decode_tokens`, and KV slots are
  allocated for them plus `num_lookahead_tokens` (the drafter's own slots: `k` for EAGLE and
  MTP, 0 otherwise). `update_from_output` rolls `num_computed_tokens` back by the rejected
  drafts: `num_rejected = len(scheduled_spec_token_ids) - (len(generated_token_ids) - 1)`.
- `vllm/v1/core/sched/async_scheduler.py`: with async scheduling the next step is scheduled
  before the last one's drafts are judged, with `1 + k` output placeholders per step (the drafts
  are produced on the GPU); the rejected ones are taken off the placeholders when the step is
  applied. A request is not scheduled again once the tokens it is sure to get (one per step in
  flight, every draft rejected) reach its end.
- `vllm/v1/sample/rejection_sampler.py`: draft j is accepted only if drafts 1..j-1 were; the
  first rejection ends the run and the target's own token replaces it; if all are accepted the
  target adds a bonus token. So a step yields `1 + a` tokens, `0 <= a <= d` for `d` drafts.
- `vllm/v1/spec_decode/metrics.py` (`SpecDecodingStats`): drafts, draft tokens, accepted
  tokens, accepted tokens per position; mean acceptance length = 1 + accepted / drafts.

The acceptance law is the one of vLLM's synthetic rejection sampler
(`rejection_sample_method="synthetic"`, `vllm/config/speculative.py`): per-position
*unconditional* rates, `acceptance_rates[i]` = P(the first i+1 drafts are all accepted),
non-increasing. One uniform draw u per verified request gives a = #{i < d : u < rates[i]},
so P(a >= i+1) = rates[i] exactly, seeded from the replica's own stream.

DIVERGENCE: acceptance is drawn from a per-position law, the same for every request and
step; real acceptance varies with the text (by request, by position in the output).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sim.core.scheduler import SchedulerOutput

# Methods vLLM 0.24 names (vllm/config/speculative.py SpeculativeMethod), as modelled here.
METHODS = ("eagle", "eagle3", "mtp", "ngram", "draft_model")
# EAGLE-style drafters keep their own KV for the next drafts (scheduler.num_lookahead_tokens).
LOOKAHEAD_METHODS = ("eagle", "eagle3", "mtp")


@dataclass(frozen=True, slots=True)
class SpecDecodeConfig:
    """What the scheduler and the sampler need: k, the KV lookahead, the acceptance law."""

    method: str
    num_speculative_tokens: int  # k
    acceptance_rates: tuple[float, ...]  # unconditional, per draft position, length k

    @property
    def num_lookahead_tokens(self) -> int:
        """vLLM's Scheduler: `num_lookahead_tokens = num_spec_tokens` when `use_eagle()`."""
        return self.num_speculative_tokens if self.method in LOOKAHEAD_METHODS else 0

    @property
    def mean_acceptance_length(self) -> float:
        """Expected tokens per verify step with all k drafts scheduled: 1 + sum of the rates."""
        return 1.0 + sum(self.acceptance_rates)


@dataclass(frozen=True, slots=True)
class SpecBatch:
    """What a speculative step adds to the batch summary, for the verify and drafter prices.

    Each verifying request's 1 + d tokens are in the step's BatchSummary as 1 + d decode rows
    (every linear layer and the LM head run over all of them: the rejection sampler needs the
    target's logits at each draft position); `verify_context_tokens` lets the attention be
    priced with the request's KV read once (sim.cost.drafter)."""

    num_verify_reqs: int
    num_draft_tokens: int  # scheduled drafts, summed
    verify_context_tokens: int  # cached tokens of the verifying requests before the step
    num_reqs: int  # every request of the step: the drafter proposes for each
    context_tokens: int  # their tokens in the KV cache after this step's, summed
    uniform: bool  # every request verifies exactly 1 + k tokens (vLLM's uniform decode batch)
    num_speculative_tokens: int

    @classmethod
    def of(cls, output: SchedulerOutput, k: int, verify_context_tokens: int) -> SpecBatch:
        drafts = output.spec_num_drafts
        context = sum(r.num_computed_tokens for r in output.spec_decodes)
        context += sum(r.num_computed_tokens for r in output.others)
        num_verify = len(output.spec_decodes)
        return cls(
            num_verify_reqs=num_verify,
            num_draft_tokens=sum(drafts),
            verify_context_tokens=verify_context_tokens,
            num_reqs=output.num_reqs,
            context_tokens=context,
            uniform=num_verify == output.num_reqs and all(d == k for d in drafts),
            num_speculative_tokens=k,
        )

    def launch_shape(self, num_tokens: int, capture_size: int) -> tuple[int, int, int]:
        """(tokens, requests, decodes) as `EngineClock.launch` reads them: vLLM captures FULL
        graphs for uniform batches of 1 + k tokens per request (`uniform_decode_query_len`),
        so such a batch within the capture size replays a FULL graph; any other is PIECEWISE
        within it and eager above it (`cudagraph_mode`). Every verifying request counts as a
        decode for the runtime's per-decode GPU work."""
        if self.uniform and num_tokens <= capture_size:
            return self.num_reqs, self.num_reqs, self.num_reqs
        return num_tokens, self.num_reqs, self.num_verify_reqs


def spec_capture_size(max_num_seqs: int, max_num_batched_tokens: int, k: int) -> int:
    """vLLM's default largest CUDA-graph size with speculation (`vllm/config/vllm.py`
    `_set_cudagraph_sizes`): min(max_num_seqs x (1 + k) x 2, 512, max_num_batched_tokens)."""
    return min(max_num_seqs * (1 + k) * 2, 512, max_num_batched_tokens)


def acceptance_problem(rates: tuple[float, ...], k: int) -> str:
    """Why `rates` is not an acceptance law for k drafts, or "" (vLLM's synthetic checks)."""
    if len(rates) < k:
        return f"has {len(rates)} position(s) but num_speculative_tokens is {k}"
    for i, r in enumerate(rates):
        if not 0.0 <= r <= 1.0:
            return f"position {i + 1} is {r}, outside [0, 1]"
        if i and r > rates[i - 1]:
            return (
                f"position {i + 1} ({r}) exceeds position {i} ({rates[i - 1]}): the rates are"
                " unconditional (P(the first i drafts all accepted)) and cannot rise"
            )
    return ""


class SyntheticRejectionSampler:
    """Accepted draft counts per verified request, from the per-position law."""

    __slots__ = ("_rates", "_rng")

    def __init__(self, rates: tuple[float, ...], rng: np.random.Generator) -> None:
        self._rates = rates
        self._rng = rng

    def num_accepted(self, num_drafts: list[int]) -> list[int]:
        """a_j for each request j with num_drafts[j] drafts scheduled (one draw each)."""
        u = self._rng.random(len(num_drafts)).tolist()
        rates = self._rates
        out = []
        for d, x in zip(num_drafts, u):
            a = 0
            while a < d and x < rates[a]:
                a += 1
            out.append(a)
        return out


@dataclass(slots=True)
class SpecDecodingStats:
    """vLLM's SpecDecodingStats, summed over a run (one replica)."""

    num_spec_tokens: int
    num_drafts: int = 0  # verify steps of a request with at least one draft
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    num_accepted_tokens_per_pos: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.num_accepted_tokens_per_pos:
            self.num_accepted_tokens_per_pos = [0] * self.num_spec_tokens

    def observe(self, num_draft_tokens: int, num_accepted_tokens: int) -> None:
        """vLLM's `observe_draft`: one request's drafts of one step."""
        self.num_drafts += 1
        self.num_draft_tokens += num_draft_tokens
        self.num_accepted_tokens += num_accepted_tokens
        per_pos = self.num_accepted_tokens_per_pos
        for i in range(num_accepted_tokens):
            per_pos[i] += 1

    def merge(self, other: SpecDecodingStats) -> None:
        self.num_drafts += other.num_drafts
        self.num_draft_tokens += other.num_draft_tokens
        self.num_accepted_tokens += other.num_accepted_tokens
        for i, n in enumerate(other.num_accepted_tokens_per_pos):
            self.num_accepted_tokens_per_pos[i] += n
