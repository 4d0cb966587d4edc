"""Speculative decoding by hand: one verify step scheduled, priced and applied (block size 4,
ten blocks), the rollback of rejected drafts, the async guarantee, and the acceptance law."""

from __future__ import annotations

import numpy as np
import pytest

from sim.core.kv_cache_manager import KVCacheManager
from sim.core.request import Request, RequestStatus
from sim.core.scheduler import Scheduler, SchedulerConfig
from sim.core.spec_decode import SpecBatch, SpecDecodeConfig, SyntheticRejectionSampler
from sim.cost.batch import BatchSummary
from sim.cost.breakdown import OP_CLASSES
from sim.cost.drafter import SpeculativeCostModel, build_drafter
from sim.cost.roofline import build_cost_model
from conftest import compose_config
from sim.config.build import build_run_spec

ATTN = OP_CLASSES.index("attention_decode")


def make_scheduler(rates, k=3, method="eagle", max_num_batched_tokens=64, blocks=10):
    cfg = SchedulerConfig(max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=4, max_model_len=64)
    kv = KVCacheManager(blocks, 4, 64, enable_caching=False)
    spec = SpecDecodeConfig(method, k, tuple(rates))
    return Scheduler(cfg, kv, spec_decode=spec, spec_rng=np.random.default_rng(0))


def prefill(scheduler, request):
    scheduler.add_request(request)
    out = scheduler.schedule(0.0)
    assert out.sampling == [request]
    scheduler.update_from_output(out)
    return out


def test_one_verify_step_by_hand():
    s = make_scheduler([1.0, 0.0, 0.0])  # the first draft always accepted, the second never
    r = Request(request_id=1, arrival_s=0.0, num_prompt_tokens=6, max_tokens=10)
    prefill(s, r)
    assert (r.num_tokens, r.num_computed_tokens) == (7, 6)  # prompt + first token

    out = s.schedule(0.1)
    # 1 + k = 4 tokens: the last real token and 3 drafts (scheduled_spec_decode_tokens)
    assert out.spec_decodes == [r] and list(out.spec_num_drafts) == [3]
    assert out.num_scheduled_tokens == [4]
    assert (r.num_computed_tokens, r.num_tokens) == (10, 11)
    assert (r.num_output_placeholders, r.num_draft_placeholders) == (4, 3)
    # KV slots: 10 computed + EAGLE's 3 lookahead = 13 tokens = 4 blocks of 4
    assert len(r.block_ids) == 4
    # Priced as 4 decode rows; query i sees 6 + i cached tokens: 6 + 7 + 8 + 9 = 30
    assert out.batch == BatchSummary(num_decode_seqs=4, decode_context_tokens=30)
    assert out.spec_batch == SpecBatch(
        num_verify_reqs=1, num_draft_tokens=3, verify_context_tokens=6, num_reqs=1,
        context_tokens=10, uniform=True, num_speculative_tokens=3,
    )  # fmt: skip

    finished = s.update_from_output(out)
    # 1 accepted, 2 rejected: num_computed_tokens -= 2; the step gave 1 + 1 tokens
    assert not finished
    assert list(out.spec_num_emitted) == [2]
    assert (r.num_computed_tokens, r.num_tokens) == (8, 9)
    assert (r.num_output_placeholders, r.num_draft_placeholders) == (0, 0)
    assert r.num_output_tokens == 3
    stats = s.spec_decoding_stats
    assert (stats.num_drafts, stats.num_draft_tokens, stats.num_accepted_tokens) == (1, 3, 1)
    assert stats.num_accepted_tokens_per_pos == [1, 0, 0]


def test_the_verify_step_is_priced_as_its_parts():
    spec = build_run_spec(compose_config(["speculative=eagle"]))
    target = build_cost_model(spec.model, spec.hardware, spec.precision, spec.tp, spec.cost)
    drafter = spec.speculative.drafter
    assert drafter.model.num_hidden_layers == 1 and drafter.model.hidden_size == spec.model.hidden_size
    head = build_cost_model(drafter.model, spec.hardware, spec.precision, drafter.tp, spec.cost)
    model = SpeculativeCostModel(target, target, drafter, head)
    batch = BatchSummary(num_decode_seqs=4, decode_context_tokens=30)
    sb = SpecBatch(1, 3, 6, 1, 10, True, 3)
    cost = model.step_cost(batch, sb)
    # target over 4 rows, its attention that of one decode over 6 tokens (KV read once)
    rows = target.step_cost(batch)
    once = target.step_cost(BatchSummary(num_decode_seqs=1, decode_context_tokens=6)).ops[ATTN]
    verify_s = rows.gpu_time_s - rows.ops[ATTN].time_s + once.time_s
    # drafter: a pass over the step's 4 rows, then k - 1 = 2 one-token passes (context 11, 12)
    drafter_s = head.step_cost(batch).gpu_time_s + sum(
        head.step_cost(BatchSummary(num_decode_seqs=1, decode_context_tokens=10 + i)).gpu_time_s
        for i in (1, 2)
    )
    assert cost.gpu_time_s == pytest.approx(verify_s + drafter_s, rel=1e-12)
    assert model.drafter_gpu_s == pytest.approx(drafter_s, rel=1e-12)
    assert cost.ops[ATTN].time_s == pytest.approx(once.time_s + sum(
        head.step_cost(b).ops[ATTN].time_s
        for b in (batch, *(BatchSummary(num_decode_seqs=1, decode_context_tokens=10 + i) for i in (1, 2)))
    ), rel=1e-12)  # fmt: skip


def test_tokens_past_the_end_are_dropped_and_the_request_finishes():
    s = make_scheduler([1.0, 1.0, 1.0])  # every draft accepted: 4 tokens per step
    r = Request(request_id=1, arrival_s=0.0, num_prompt_tokens=6, max_tokens=3)
    prefill(s, r)
    out = s.schedule(0.1)
    finished = s.update_from_output(out)
    assert finished == [r] and r.status == RequestStatus.FINISHED
    assert list(out.spec_num_emitted) == [2]  # 4 accepted, 2 of them past max_tokens
    assert r.num_output_tokens == 3
    assert s.kv_cache_manager.num_used_blocks == 0


def test_the_budget_and_max_model_len_trim_the_drafts():
    s = make_scheduler([0.9, 0.8, 0.7], max_num_batched_tokens=6)
    for i in (1, 2):
        s.add_request(Request(request_id=i, arrival_s=0.0, num_prompt_tokens=2, max_tokens=20))
    s.update_from_output(s.schedule(0.0))
    out = s.schedule(0.1)
    assert list(out.spec_num_drafts) == [3, 1]  # 4 + 2 tokens: the budget of 6 cut the second
    assert not out.spec_batch.uniform
    s.update_from_output(out)
    # max_model_len 64: num_computed_tokens 61 leaves room for 1 + 1 tokens (vLLM's
    # min(num_new_tokens, max_model_len - 1 - num_computed_tokens))
    s = make_scheduler([0.9, 0.8, 0.7], blocks=20)
    r = Request(request_id=3, arrival_s=0.0, num_prompt_tokens=61, max_tokens=3)
    s.add_request(r)
    s.update_from_output(s.schedule(0.0))
    assert list(s.schedule(0.1).spec_num_drafts) == [1]


def test_async_schedules_until_the_end_is_sure_and_rolls_back_in_order():
    """Step N+1 is scheduled before step N is applied (vLLM's AsyncScheduler): a request whose
    optimistic tokens reach its end is scheduled again unless its sure tokens do."""
    s = make_scheduler([0.0, 0.0, 0.0])  # every draft rejected: 1 token per step
    r = Request(request_id=1, arrival_s=0.0, num_prompt_tokens=6, max_tokens=3)
    s.add_request(r)
    steps = [s.schedule(0.0)]  # the prefill; its first token in flight
    tokens = []
    for t in range(1, 20):
        steps.append(s.schedule(float(t)))
        tokens.append(len(steps[-1].spec_decodes))
        s.update_from_output(steps.pop(0))
        if r.status == RequestStatus.FINISHED:
            break
    s.update_from_output(steps.pop(0))
    assert r.status == RequestStatus.FINISHED and r.num_output_tokens == 3
    # After the first token 2 more are needed, one sure per verify step: the second verify step
    # is scheduled while the first is in flight (its optimistic 4 tokens already reach the end,
    # its sure one does not), and none after that (the sure tokens reach the end).
    assert tokens == [1, 1, 0]
    assert s.spec_decoding_stats.num_accepted_tokens == 0


def test_acceptance_law_matches_its_rates():
    rates = (0.8, 0.6, 0.45)
    n = 200_000
    sampler = SyntheticRejectionSampler(rates, np.random.default_rng(7))
    accepted = np.asarray(sampler.num_accepted([3] * n))
    for i, p in enumerate(rates, start=1):
        share = float(np.mean(accepted >= i))  # P(the first i drafts all accepted)
        assert abs(share - p) < 4 * np.sqrt(p * (1 - p) / n), (i, share, p)
    assert np.mean(accepted) + 1 == pytest.approx(1 + sum(rates), abs=0.01)  # acceptance length
    # fewer drafts scheduled: the law of the first d positions
    two = np.asarray(SyntheticRejectionSampler(rates, np.random.default_rng(7)).num_accepted([2] * n))
    assert two.max() == 2 and np.array_equal(two, np.minimum(accepted, 2))
    again = SyntheticRejectionSampler(rates, np.random.default_rng(7)).num_accepted([3] * n)
    assert again == accepted.tolist()  # same seed, same draws
