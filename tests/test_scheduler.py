"""Hand-built scheduler cases: block size 4, ten KV blocks (nine usable: block 0 is vLLM's
null block). Every expected value below is worked out by hand in the comments."""

from __future__ import annotations

from sim.core.request import RequestStatus
from engine_driver import make_scheduler, req, step


def test_null_block_leaves_nine_usable_blocks():
    s = make_scheduler(num_gpu_blocks=10)
    assert s.kv_cache_manager.num_usable_blocks == 9


def test_chunked_prefill_shares_the_token_budget_with_running_requests():
    s = make_scheduler(max_num_batched_tokens=8, max_num_seqs=4)
    a, b = req(0, prompt=10, output=3), req(1, prompt=6, output=2)
    s.add_request(a)
    s.add_request(b)
    # Step 0: A takes the whole budget with its first chunk of 8 (2 blocks); B waits.
    log = step(s, 0)
    assert log.scheduled == {0: 8} and log.blocks_used == 2
    assert a.num_output_tokens == 0 and a.first_token_s < 0
    # Step 1: running first: A's last 2 prompt tokens (3rd block), then B's whole prompt of 6.
    log = step(s, 1)
    assert log.scheduled == {0: 2, 1: 6} and log.blocks_used == 5
    assert a.first_token_s == 2.0 and b.first_token_s == 2.0
    batch = log.output.batch
    assert batch.num_prefill_tokens == 8 and batch.num_prefill_seqs == 2
    # Causal pairs: A's chunk q=2 after p=8 -> 2*8 + 3 = 19; B's q=6, p=0 -> 21.
    assert batch.prefill_attn_pairs == 40
    # Step 2: both decode one token; B reaches its 2 outputs and finishes, freeing 2 blocks.
    log = step(s, 2)
    assert log.scheduled == {0: 1, 1: 1} and log.finished == [1]
    assert log.output.batch.num_decode_seqs == 2 and log.output.batch.decode_context_tokens == 10 + 6
    assert s.kv_cache_manager.num_used_blocks == 3
    # Step 3: A's third output token: finished.
    log = step(s, 3)
    assert log.scheduled == {0: 1} and log.finished == [0]
    assert a.num_output_tokens == 3 and b.num_output_tokens == 2
    assert s.kv_cache_manager.num_used_blocks == 0
    pool = s.kv_cache_manager.block_pool
    assert pool.num_acquired_total == pool.num_released_total == 5


def test_newest_running_request_is_preempted_and_recomputed_after():
    s = make_scheduler(num_gpu_blocks=10, max_num_batched_tokens=64)
    a, b = req(0, prompt=16, output=10), req(1, prompt=16, output=10)
    s.add_request(a)
    s.add_request(b)
    # Step 0: both prompts (4 blocks each, 8 of 9 used); both sample their first token.
    log = step(s, 0)
    assert log.scheduled == {0: 16, 1: 16} and log.blocks_used == 8
    # Step 1: A's 17th token needs a 5th block: the last free one. B then needs a 5th block,
    # none is free, so the newest running request -- B itself -- is preempted.
    log = step(s, 1)
    assert log.scheduled == {0: 1} and log.preempted == [1]
    assert b.status == RequestStatus.PREEMPTED and b.num_computed_tokens == 0
    assert b.num_output_tokens == 1 and b.num_preemptions == 1 and b.block_ids == []
    assert list(s.waiting) == [b]
    # A decodes alone until done: its 26 tokens need 7 blocks, leaving 2 free, too few for B's
    # recomputation of 17 tokens (5 blocks). A samples outputs 2..10 in steps 1..9.
    for i in range(2, 10):
        log = step(s, i)
        assert log.scheduled == {0: 1}, i
    assert log.finished == [0] and a.finish_s == 10.0
    # Step 10: B comes back: prompt + its one output are recomputed as a 17-token prefill.
    log = step(s, 10)
    assert log.scheduled == {1: 17}
    assert b.num_output_tokens == 2 and b.first_token_s == 1.0
    for i in range(11, 19):
        log = step(s, i)
    assert log.finished == [1] and b.num_output_tokens == 10
    pool = s.kv_cache_manager.block_pool
    pool.check_invariants()
    assert pool.num_acquired_total == pool.num_released_total


def test_no_admission_in_a_step_that_preempted():
    s = make_scheduler(num_gpu_blocks=10)
    a, b, c = req(0, 16, 10), req(1, 16, 10), req(2, 1, 1)
    for r in (a, b):
        s.add_request(r)
    step(s, 0)
    s.add_request(c)  # needs a single block, and one would be free after B's preemption
    log = step(s, 1)
    assert log.preempted == [1] and 2 not in log.scheduled
    # The preempted request goes back in front of the newer arrival.
    assert [r.request_id for r in s.waiting] == [1, 2]


def test_max_num_seqs_caps_admission():
    s = make_scheduler(num_gpu_blocks=64, max_num_seqs=2)
    for i in range(3):
        s.add_request(req(i, 4, 5))
    log = step(s, 0)
    assert sorted(log.scheduled) == [0, 1] and len(s.waiting) == 1


def test_chunked_prefill_off_waits_for_a_budget_that_holds_the_prompt():
    s = make_scheduler(num_gpu_blocks=64, max_num_batched_tokens=8, enable_chunked_prefill=False)
    s.add_request(req(0, 6, 4))
    s.add_request(req(1, 6, 4))
    log = step(s, 0)
    # 6 tokens of request 0 leave a budget of 2 < 6: request 1 must wait whole.
    assert log.scheduled == {0: 6}


def test_long_prefill_threshold_caps_chunks():
    s = make_scheduler(num_gpu_blocks=64, max_num_batched_tokens=64, long_prefill_token_threshold=5)
    s.add_request(req(0, 12, 2))
    assert step(s, 0).scheduled == {0: 5}
    assert step(s, 1).scheduled == {0: 5}
    assert step(s, 2).scheduled == {0: 2}


def test_rejection_reasons():
    s = make_scheduler(num_gpu_blocks=10, max_model_len=32)
    assert "max_model_len" in s.rejection_reason(30, 5)
    assert s.rejection_reason(20, 10) == ""
    # 36 tokens would need 9 blocks: fits. A longer model length exposes the cache limit.
    s = make_scheduler(num_gpu_blocks=10, max_model_len=1024)
    assert "KV blocks" in s.rejection_reason(30, 10)  # 40 tokens -> 10 blocks > 9


def test_prefix_cache_hit_skips_cached_blocks_but_computes_the_last_token():
    s = make_scheduler(num_gpu_blocks=32, enable_caching=True)
    shared = (11, 12, 13, 14)
    a = req(0, 16, 2, hashes=shared)
    s.add_request(a)
    step(s, 0)
    a_blocks = list(a.block_ids)
    # B has the identical 16-token prompt: all 4 blocks are cached, but the last token must be
    # computed for its logits, so the hit is capped at 3 blocks (12 tokens): 4 tokens computed.
    b = req(1, 16, 2, hashes=shared)
    s.add_request(b)
    log = step(s, 1)
    assert log.scheduled == {0: 1, 1: 4}
    assert b.num_cached_tokens == 12
    assert log.output.batch.prefill_attn_pairs == 4 * 12 + 10  # q=4 after p=12
    # B shares A's first three blocks physically (A finished in that same step).
    assert b.block_ids[:3] == a_blocks[:3] and a.status == RequestStatus.FINISHED


def test_freed_blocks_stay_cached_until_evicted_in_lru_order():
    s = make_scheduler(num_gpu_blocks=6, enable_caching=True)  # 5 usable blocks
    a = req(0, 8, 1, hashes=(1, 2))  # 8 tokens: 2 full blocks
    s.add_request(a)
    step(s, 0)
    assert a.status == RequestStatus.FINISHED
    pool = s.kv_cache_manager.block_pool
    assert pool.get_num_free_blocks() == 5 and len(pool.cached_block_hash_to_block) == 2
    # A new request with the same prefix hits both blocks although A is gone.
    b = req(1, 9, 1, hashes=(1, 2))
    s.add_request(b)
    log = step(s, 1)
    assert b.num_cached_tokens == 8 and log.scheduled == {1: 1}
    # Fill the cache with unrelated requests: the cached blocks are evicted last-freed-last.
    c = req(2, 20, 1)  # 5 blocks: takes every free block, evicting the cached ones
    s.add_request(c)
    step(s, 2)
    assert pool.num_evicted_total == 2 and not pool.cached_block_hash_to_block.get(1)


def test_a_preempted_request_finds_its_own_cached_blocks_when_it_comes_back():
    s = make_scheduler(num_gpu_blocks=10, enable_caching=True)
    a, b = req(0, prompt=16, output=10), req(1, prompt=16, output=10)  # no shared hashes
    s.add_request(a)
    s.add_request(b)
    # Step 0: both prompts, 4 blocks each (8 of 9). Step 1: A takes the last free block for its
    # 17th token, B finds none and preempts itself: its 4 blocks go to the free queue tail
    # first (B3, B2, B1, B0), still cached under B's own block identities.
    step(s, 0)
    log = step(s, 1)
    assert log.preempted == [1]
    # A decodes to 26 tokens: its 6th and 7th blocks come from the front of the free queue,
    # evicting B3 and B2. B0 and B1 (B's first 8 tokens) stay cached.
    for i in range(2, 10):
        log = step(s, i)
    assert log.finished == [0]
    # Step 10: B comes back with 17 tokens (prompt + its one output). vLLM's lookup finds its
    # first two blocks: it recomputes 17 - 8 = 9 tokens, not all 17.
    log = step(s, 10)
    assert log.scheduled == {1: 9}
    assert b.num_computed_tokens == 17 and b.num_output_tokens == 2
    for i in range(11, 19):
        log = step(s, i)
    assert log.finished == [1] and b.num_output_tokens == 10
    s.kv_cache_manager.block_pool.check_invariants()


def test_blocks_with_the_same_hash_are_all_kept():
    from sim.core.block_pool import BlockPool

    pool = BlockPool(6)
    first, second = pool.get_new_blocks(2)
    pool.cache_block(first, 42)
    pool.cache_block(second, 42)  # same content computed twice (two requests at once)
    assert pool.get_cached_block(42) == first
    pool.free_blocks([first, second])
    # Evicting the published block leaves the other one findable under the hash.
    taken = [pool.get_new_blocks(1)[0] for _ in range(4)]  # the never-used blocks go first
    assert first in taken and second not in taken
    assert pool.get_cached_block(42) == second
    pool.check_invariants()


def test_a_waiting_request_is_admitted_only_if_its_whole_prompt_fits():
    # vLLM 0.24.0's scheduler_reserve_full_isl (on by default). A 17-token prompt holds 5 of
    # the 9 usable blocks; B's 20-token prompt would get a first chunk of 4 tokens (1 block,
    # long_prefill_token_threshold), which fits in the 4 free blocks, but all of it needs 5.
    for reserve, admitted in ((True, False), (False, True)):
        s = make_scheduler(num_gpu_blocks=10, long_prefill_token_threshold=4,
                           scheduler_reserve_full_isl=reserve)  # fmt: skip
        a, b = req(0, prompt=17, output=2), req(1, prompt=20, output=2)
        s.add_request(a)
        for i in range(5):  # A's prompt in chunks of 4, then its first token
            step(s, i)
        assert a.num_computed_tokens == 17 and s.kv_cache_manager.num_used_blocks == 5
        s.add_request(b)
        log = step(s, 5)
        assert (1 in log.scheduled) is admitted
        assert log.scheduled.get(1) == (4 if admitted else None)


def test_a_finished_requests_block_without_a_hash_is_reused_first():
    # vLLM 0.24.0 BlockPool.free_blocks: freed blocks without a hash go to the front of the
    # free queue, those with one to the back (the tail of a request first), so a partial last
    # block is reused before any cached one.
    s = make_scheduler(num_gpu_blocks=10, enable_caching=True)
    a = req(0, prompt=10, output=1)  # blocks 1-2 full (published), block 3 holds 2 tokens
    s.add_request(a)
    log = step(s, 0)
    assert log.finished == [0]
    pool = s.kv_cache_manager.block_pool
    first, second, partial = 1, 2, 3
    assert pool.block_hash[partial] is None and pool.block_hash[first] is not None
    queue = list(pool.free_block_queue)
    assert queue[0] == partial and queue[-2:] == [second, first]
    assert queue[1:-2] == list(range(4, 10))  # the never-used blocks stay in between


def test_under_async_scheduling_a_filled_block_is_published_when_its_step_is_applied():
    # vLLM 0.24.0: allocate_slots publishes only blocks of known tokens; AsyncScheduler
    # publishes the rest when a step's tokens arrive, for requests still running, up to the
    # tokens computed less those in flight. A's prompt of 6 fills block 1; its decodes at
    # positions 6 and 7 fill block 2 (tokens 4-7).
    s = make_scheduler(num_gpu_blocks=10, enable_caching=True)
    kv = s.kv_cache_manager
    a = req(0, prompt=6, output=8)
    s.add_request(a)
    prefill = s.schedule(0.0)
    s.update_from_output(prefill)  # A's first token: position 6 is known
    first = s.schedule(1.0)  # decode at 6; its token 7 is sampled in flight
    second = s.schedule(2.0)  # decode at 7 (token 7 still a placeholder) fills block 2
    assert kv._num_cached_blocks[0] == 1  # only tokens 0-6 are known
    s.update_from_output(first)  # token 7 arrives: 8 computed, 1 step in flight -> 7
    assert kv._num_cached_blocks[0] == 1
    s.update_from_output(second)  # the step that wrote position 7 has run: block 2
    assert kv._num_cached_blocks[0] == 2

    # A request preempted while its step is in flight publishes nothing when it lands.
    s = make_scheduler(num_gpu_blocks=10, enable_caching=True)
    kv = s.kv_cache_manager
    b = req(1, prompt=7, output=8)
    s.add_request(b)
    s.update_from_output(s.schedule(0.0))
    in_flight = s.schedule(1.0)  # decode at 7 fills block 2 (tokens 4-7)
    s._preempt(s.running.pop())
    s.update_from_output(in_flight)
    assert 1 not in kv._num_cached_blocks  # freed at the preemption, nothing published after
