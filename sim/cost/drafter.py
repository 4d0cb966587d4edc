"""What a speculative step costs on the GPU, and what the drafter takes from the KV cache.

A step with speculative decoding is the target's forward over every scheduled token (each
verifying request's 1 + d tokens are decode rows for the linear layers and the LM head: the
rejection sampler, `vllm/v1/sample/rejection_sampler.py`, compares the target's logits at
every draft position; their attention reads the request's KV once), plus the drafter:

- EAGLE / EAGLE-3 / MTP (`vllm/v1/spec_decode/eagle.py`, `EagleProposer.propose`): a first
  forward of the draft head over all the step's tokens (the target's hidden states of each
  position, padded drafter batch, vLLM's default), then k - 1 forwards of one token per
  request, each ending in the head's LM head. The head is `num_draft_layers` decoder layers of
  the target's shape (EAGLE and EAGLE-3: 1; an MTP module: the checkpoint's
  `num_nextn_predict_layers`), at the target's TP; EAGLE-3 has its own LM head over a smaller
  draft vocabulary (32,000 rows for the published Llama-3.1 heads).
- A draft model (`vllm/v1/spec_decode/draft_model.py`): the same passes with a whole smaller
  model, at `draft_tensor_parallel_size` (1 or the target's TP).
- n-gram (`vllm/v1/spec_decode/ngram_proposer.py`): no GPU work; the CPU lookup runs in the
  worker between sampling and the step's return, so it lengthens the step. Its time per
  request is assumed (`NGRAM_CPU_S_PER_REQ`).

Every drafter pass is priced by `RooflineCostModel` on a ModelSpec of the drafter (this
module only builds the specs and the batch summaries). The time is added to the step's
operator classes; the drafter's share is kept apart in `SpeculativeCostModel.drafter_gpu_s`.

DIVERGENCE: the EAGLE fc that fuses the target's hidden states (2h -> h, EAGLE-3 3h -> h) and
the drafter's own CUDA-graph launches are not priced: one GEMM over the step's tokens per step,
and CPU work that overlaps the GPU under async scheduling. The power cap applies to the
target's forward only.
DIVERGENCE: the drafter is sized and priced in the run's precision; vLLM loads a draft
checkpoint as stored (usually bf16) unless `speculative_config.quantization` is set.
DIVERGENCE: a verify step is 1 + d decode rows with one decode's attention per request, not
vLLM's kernel; measured on the H200, the verify/decode time ratio is within 4.5% median
(analysis/validate_spec_verify.py).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol

from sim.core.spec_decode import SpecBatch
from sim.cost.batch import BatchSummary
from sim.cost.breakdown import OP_CLASSES, OpCost, StepCost
from sim.cost.roofline import RooflineCostModel
from sim.errors import ConfigError, DoesNotFitError
from sim.memory import MemoryPlan, check_given_blocks_fit, kv_bytes_per_token, weight_bytes_per_gpu
from sim.model_spec import ModelSpec
from sim.precision import PrecisionSpec

GB = 1e9
EAGLE3_DRAFT_VOCAB = 32000  # draft_vocab_size of the published EAGLE-3 Llama-3.1 heads
NGRAM_CPU_S_PER_REQ = 20e-6  # assumed: numba lookup over a request's tokens, per step
_ATTN_DECODE = OP_CLASSES.index("attention_decode")


class CostModel(Protocol):
    def step_cost(self, batch: BatchSummary) -> StepCost: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Drafter:
    """The drafter of one method: its model shapes (None for n-gram), TP and what it shares."""

    method: str
    model: ModelSpec | None
    tp: int
    shares_embeddings: bool  # EAGLE heads and MTP modules use the target's embedding table
    shares_lm_head: bool  # EAGLE and MTP use the target's LM head; EAGLE-3 has its own


def build_drafter(
    method: str, target: ModelSpec, tp: int, draft_model: ModelSpec | None,
    draft_tp: int, num_draft_layers: int,
) -> Drafter:  # fmt: skip
    """The drafter's shapes for `method` (checked by sim.config.speculative)."""
    if method == "ngram":
        return Drafter(method, None, tp, True, True)
    if method == "draft_model":
        assert draft_model is not None
        return Drafter(method, draft_model, draft_tp, False, False)
    head = dataclasses.replace(
        target,
        name=f"{target.name}_{method}_head",
        num_hidden_layers=num_draft_layers,
        vocab_size=EAGLE3_DRAFT_VOCAB if method == "eagle3" else target.vocab_size,
        published_params_b=None,
    )
    return Drafter(method, head, tp, True, method != "eagle3")


def drafter_weight_bytes(drafter: Drafter, precision: PrecisionSpec) -> float:
    """One GPU's share of the drafter's weights, without the tables it shares."""
    if drafter.model is None:
        return 0.0
    full = weight_bytes_per_gpu(drafter.model, precision, drafter.tp)
    vocab_rows = math.ceil(drafter.model.vocab_size / drafter.tp) * drafter.model.hidden_size
    tables = 1 if drafter.model.tie_word_embeddings else 2
    bf16 = 2.0
    shared = (drafter.shares_embeddings + (drafter.shares_lm_head and tables == 2)) * vocab_rows * bf16
    return full - shared


def plan_with_drafter(
    plan: MemoryPlan, drafter: Drafter, precision: PrecisionSpec, num_gpu_blocks_override: int | None
) -> MemoryPlan:
    """The memory plan once the drafter's weights are loaded and its layers share the KV cache.

    vLLM sizes one KV cache for the target's and the drafter's attention layers together
    (`vllm/v1/worker/gpu_model_runner.py` `get_kv_cache_spec` includes the draft layers), so
    every block holds both and there are fewer of them."""
    if drafter.model is None:
        return plan
    extra_weights = drafter_weight_bytes(drafter, precision)
    extra_kv = kv_bytes_per_token(drafter.model, precision, drafter.tp)
    grown = dataclasses.replace(
        plan,
        weight_bytes=plan.weight_bytes + extra_weights,
        kv_bytes_per_token=plan.kv_bytes_per_token + extra_kv,
    )
    if grown.kv_budget_bytes <= 0:
        raise DoesNotFitError(
            f"the {drafter.method} drafter ({drafter.model.name}, {extra_weights / GB:.1f} GB per"
            f" GPU) does not fit beside {plan.model_name} on {plan.hardware_name} at TP={plan.tp}:"
            f" {plan.kv_budget_bytes / GB:.1f} GB per GPU were left for the KV cache; use a smaller"
            " draft model, more TP or a lower precision"
        )
    blocks = max(0, math.floor(grown.kv_budget_bytes / grown.block_bytes))
    if num_gpu_blocks_override is not None:
        blocks = num_gpu_blocks_override
    grown = dataclasses.replace(grown, num_gpu_blocks=blocks)
    check_given_blocks_fit(grown)
    if blocks < grown.blocks_per_full_seq:
        raise DoesNotFitError(
            f"with the {drafter.method} drafter ({drafter.model.name}) the KV cache of"
            f" {plan.model_name} holds {grown.max_num_cached_tokens} tokens, less than one"
            f" max_model_len={plan.max_model_len} sequence; lower scheduler.max_model_len or use"
            " a smaller draft model"
        )
    return grown


class SpeculativeCostModel:
    """Prices a speculative step: target forward + logits at the drafts + drafter passes."""

    def __init__(
        self, target: CostModel, head: RooflineCostModel, drafter: Drafter,
        drafter_cost: RooflineCostModel | None,
    ) -> None:  # fmt: skip
        """`target`: the run's cost model (possibly power-capped); `head`: the target's plain
        roofline model, which prices the verify attention; `drafter_cost`: the drafter's
        roofline model (None for n-gram)."""
        self.target = target
        self.head = head
        self.drafter = drafter
        self.drafter_cost = drafter_cost
        self.drafter_gpu_s = 0.0  # running total, for the summary

    def step_cost(self, batch: BatchSummary, spec: SpecBatch) -> StepCost:
        verify = self.verify_cost(batch, spec)
        ops = list(verify.ops)
        drafter_s = 0.0
        if self.drafter_cost is not None:
            for cost in self._drafter_passes(batch, spec):
                drafter_s += cost.gpu_time_s
                ops = [_add(a, b) for a, b in zip(ops, cost.ops)]
        elif spec.num_reqs:  # n-gram: CPU lookup inside the step
            drafter_s = NGRAM_CPU_S_PER_REQ * spec.num_reqs
        self.drafter_gpu_s += drafter_s
        gpu_time_s = verify.gpu_time_s + drafter_s
        return StepCost(ops=tuple(ops), gpu_time_s=gpu_time_s, overhead_s=verify.overhead_s)

    def verify_cost(self, batch: BatchSummary, spec: SpecBatch) -> StepCost:
        """The target's forward. The batch holds the verify tokens as decode rows, each
        reading its context: the attention kernel reads each request's KV once for all of its
        rows (FlashAttention packs a request's queries, as it packs GQA heads), so its price
        is that of one decode per verifying request over the same contexts (measured on the
        H200: analysis/validate_spec_verify.py)."""
        base = self.target.step_cost(batch)
        if not spec.num_verify_reqs:
            return base
        ops = list(base.ops)
        once = self.head.step_cost(
            BatchSummary(
                num_decode_seqs=spec.num_verify_reqs,
                decode_context_tokens=spec.verify_context_tokens,
            )
        ).ops[_ATTN_DECODE]
        gpu_time_s = base.gpu_time_s + once.time_s - ops[_ATTN_DECODE].time_s
        ops[_ATTN_DECODE] = once
        return StepCost(ops=tuple(ops), gpu_time_s=gpu_time_s, overhead_s=base.overhead_s)

    def _drafter_passes(self, batch: BatchSummary, spec: SpecBatch):
        """First pass over every token of the step, then k - 1 one-token passes."""
        assert self.drafter_cost is not None
        yield self.drafter_cost.step_cost(batch)
        n = spec.num_reqs
        for i in range(1, spec.num_speculative_tokens):
            yield self.drafter_cost.step_cost(
                BatchSummary(num_decode_seqs=n, decode_context_tokens=spec.context_tokens + i * n)
            )


def _add(a: OpCost, b: OpCost) -> OpCost:
    return OpCost(
        a.time_s + b.time_s, a.flops + b.flops, a.bytes + b.bytes,
        a.compute_s + b.compute_s, a.memory_s + b.memory_s,
    )  # fmt: skip


def check_draft_model(target: ModelSpec, draft: ModelSpec) -> None:
    """vLLM refuses a draft model of another vocabulary (`verify_equal_vocab_size_if_draft_model`);
    a draft model no smaller than the target cannot save time."""
    target_params, draft_params = target.num_params, draft.num_params
    if draft.vocab_size != target.vocab_size:
        raise ConfigError(
            f"speculative.model={draft.name}: its vocabulary ({draft.vocab_size}) differs from"
            f" {target.name}'s ({target.vocab_size}); vLLM requires the same tokenizer"
        )
    if draft_params >= target_params:
        raise ConfigError(
            f"speculative.model={draft.name} ({draft_params / 1e9:.1f}B parameters) is not smaller"
            f" than the target {target.name} ({target_params / 1e9:.1f}B); a draft model must be"
            " much smaller to save time (e.g. llama3_8b for llama3_70b)"
        )
