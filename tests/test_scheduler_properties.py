"""Scheduler invariants under random configurations and random load (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sim.core.request import RequestStatus
from engine_driver import make_scheduler, req, step

configs = st.fixed_dictionaries(
    {
        "num_gpu_blocks": st.integers(4, 48),
        "block_size": st.sampled_from([1, 2, 4, 8, 16]),
        "max_num_batched_tokens": st.integers(1, 96),
        "max_num_seqs": st.integers(1, 8),
        "enable_chunked_prefill": st.booleans(),
        "enable_caching": st.booleans(),
        "long_prefill_token_threshold": st.sampled_from([0, 0, 3, 17]),
    }
)
workloads = st.lists(
    st.tuples(
        st.integers(0, 30),  # arrival step
        st.integers(1, 80),  # prompt tokens
        st.integers(1, 24),  # output tokens
        st.integers(0, 3),  # shared-prefix family (0: none)
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(config=configs, workload=workloads)
def test_invariants_hold_every_step_and_every_request_ends(config, workload):
    if not config["enable_chunked_prefill"]:
        # vLLM refuses this combination at start-up: a prompt longer than the budget never runs.
        config["max_num_batched_tokens"] = max(config["max_num_batched_tokens"], 80 + 24)
    s = make_scheduler(max_model_len=2048, **config)
    kv = s.kv_cache_manager
    requests = []
    rejected = []
    for i, (arrive, prompt, output, family) in enumerate(sorted(workload)):
        hashes = tuple(hash((family, k)) for k in range(prompt // kv.block_size)) if family else ()
        requests.append((arrive, req(i, prompt, output, hashes=hashes, arrival=float(arrive))))
    pending = list(requests)
    for index in range(5000):
        while pending and pending[0][0] <= index:
            _, r = pending.pop(0)
            if s.rejection_reason(r.num_prompt_tokens, r.max_tokens):
                rejected.append(r)
            else:
                s.add_request(r)
        if not s.has_unfinished_requests():
            if not pending:
                break
            continue
        log = step(s, index)
        # Progress: a step with work always schedules something (no deadlock).
        assert log.scheduled, "work left but nothing scheduled"
        assert sum(log.scheduled.values()) <= config["max_num_batched_tokens"]
        assert len(s.running) <= config["max_num_seqs"]
        assert log.output.batch.num_tokens == sum(log.scheduled.values())
        kv.block_pool.check_invariants()
        for r in s.running:
            assert r.num_computed_tokens <= r.num_tokens
            assert len(r.block_ids) * kv.block_size >= r.num_computed_tokens
    else:
        raise AssertionError("the run did not drain")

    for _, r in requests:
        if r in rejected:
            continue
        assert r.status == RequestStatus.FINISHED
        assert r.num_output_tokens == r.max_tokens
        assert 0 <= r.first_scheduled_s <= r.first_token_s <= r.finish_s
        assert r.arrival_s <= r.first_scheduled_s
    assert kv.block_pool.num_acquired_total == kv.block_pool.num_released_total
    assert kv.num_used_blocks == 0
