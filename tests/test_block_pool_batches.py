"""The block pool's batched operations leave the pool as the one-block operations would:
publishing a range (`cache_full_blocks`) equals `cache_block` per block, and the KV manager
publishes the same blocks under the same hashes whether a request grows one token at a time
(decodes) or in chunks (prefill), with duplicates, evictions and preemption-like frees."""

from __future__ import annotations

import random

from sim.core.block_pool import PRIVATE, BlockPool
from sim.core.kv_cache_manager import KVCacheManager
from sim.core.request import Request, RequestStatus


def _state(pool: BlockPool) -> tuple:
    return (
        list(pool.free_block_queue),
        list(pool.ref_cnt),
        list(pool.block_hash),
        dict(pool.cached_block_hash_to_block),
        {h: list(b) for h, b in pool._same_hash_blocks.items()},
        pool.num_acquired_total,
        pool.num_released_total,
        pool.num_evicted_total,
    )


def test_cache_full_blocks_equals_cache_block_one_by_one():
    rng = random.Random(7)
    for _ in range(200):
        one, batched = BlockPool(40), BlockPool(40)
        for _ in range(12):
            n = rng.randint(1, 8)
            if n > one.get_num_free_blocks():
                held = [b for b in range(1, 40) if one.ref_cnt[b]]
                rng.shuffle(held)
                one.free_blocks(held)
                batched.free_blocks(held)
            blocks = one.get_new_blocks(n)
            assert batched.get_new_blocks(n) == blocks
            hashes = [rng.randint(0, 6) for _ in blocks]  # few values: duplicates are common
            if rng.random() < 0.3:  # a block published already keeps its hash
                one.cache_block(blocks[0], 99)
                batched.cache_block(blocks[0], 99)
            for block_id, h in zip(blocks, hashes):
                one.cache_block(block_id, h)
            batched.cache_full_blocks(blocks, hashes)
            assert _state(one) == _state(batched)
        one.check_invariants()


def _grow(kv: KVCacheManager, request: Request, chunks: list[int]) -> None:
    """Schedule `chunks` tokens after one another, as the scheduler advances a request."""
    for n in chunks:
        assert kv.allocate_slots(request, n)
        request.num_computed_tokens += n
        if request.num_computed_tokens >= request.num_tokens:
            request.num_tokens = request.num_computed_tokens + 1  # the sampled token


def test_decode_and_chunked_publication_agree():
    rng = random.Random(3)
    for _ in range(50):
        by_token, by_chunk = (KVCacheManager(200, 4, 4096, True) for _ in range(2))
        for rid in range(6):
            prompt = rng.randint(1, 40)
            declared = tuple(rng.randint(0, 5) for _ in range(rng.randint(0, prompt // 4)))
            a = Request(rid, 0.0, prompt, 30, block_hashes=declared)
            b = Request(rid, 0.0, prompt, 30, block_hashes=declared)
            total = prompt + rng.randint(0, 25)
            _grow(by_token, a, [prompt] + [1] * (total - prompt))
            chunks = []
            left = total
            while left:
                chunks.append(min(left, rng.randint(1, 9)))
                left -= chunks[-1]
            # The same tokens in other chunk sizes: every full block is published either way.
            b.num_tokens = total + 1
            _grow(by_chunk, b, chunks)
            assert a.block_ids == b.block_ids
            # Each full block under its identity: the declared hash, else cached for the request
            # alone until it is reset, and then under one of its own keys.
            full = a.block_ids[: total // 4]
            expected = [declared[i] if i < len(declared) else PRIVATE for i in range(total // 4)]
            assert [by_token.block_pool.block_hash[x] for x in full] == expected
            if rng.random() < 0.5:  # finished or preempted: its blocks stay cached, tail first
                if rng.random() < 0.5:
                    a.status = b.status = RequestStatus.FINISHED
                else:
                    expected = [declared[i] if i < len(declared) else (rid, i) for i in range(total // 4)]
                by_token.free(a)
                by_chunk.free(b)
                assert [by_token.block_pool.block_hash[x] for x in full] == expected
            assert _state(by_token.block_pool) == _state(by_chunk.block_pool)


def _pool_state(kv: KVCacheManager) -> tuple:
    pool = kv.block_pool
    if isinstance(pool, BlockPool):
        return _state(pool)
    return (list(pool._free), pool.num_acquired_total, pool.num_released_total)


def test_a_decode_slot_is_what_allocate_slots_gives_one_token():
    """`allocate_decode_slot` (the scheduler's steady-decode path) against `allocate_slots(r, 1)`
    on the same histories: shared declared blocks, evictions of published, private and
    duplicate blocks, frees of finished and reset requests, a full pool, the max_model_len cap."""
    rng = random.Random(11)
    for caching in (True, False):
        for _ in range(60):
            general, lean = (KVCacheManager(30, 4, 48, caching) for _ in range(2))
            live: dict[int, tuple[Request, Request]] = {}
            for rid in range(40):
                prompt = rng.randint(1, 20)
                declared = tuple(rng.randint(0, 3) for _ in range(rng.randint(0, prompt // 4)))
                pair = tuple(Request(rid, 0.0, prompt, 40, block_hashes=declared) for _ in range(2))
                if all(kv.allocate_slots(r, prompt) for kv, r in zip((general, lean), pair)):
                    for r in pair:
                        r.num_computed_tokens, r.num_tokens = prompt, prompt + 1
                    live[rid] = pair
                for a, b in list(live.values()):
                    if a.num_computed_tokens >= 47:  # at the cap: no further token
                        continue
                    ok = general.allocate_slots(a, 1)
                    assert lean.allocate_decode_slot(b) == ok
                    if ok:
                        for r in (a, b):
                            r.num_computed_tokens, r.num_tokens = r.num_tokens, r.num_tokens + 1
                    assert a.block_ids == b.block_ids
                    assert _pool_state(general) == _pool_state(lean)
                for key in [k for k in live if rng.random() < 0.2]:  # finished or reset
                    status = rng.choice([RequestStatus.FINISHED, RequestStatus.PREEMPTED])
                    for kv, r in zip((general, lean), live.pop(key)):
                        r.status = status
                        kv.free(r)
                assert _pool_state(general) == _pool_state(lean)


def test_one_new_block_is_the_one_get_new_blocks_takes():
    rng = random.Random(5)
    for _ in range(100):
        one, batched = BlockPool(20), BlockPool(20)
        for _ in range(30):
            if not one.get_num_free_blocks() or rng.random() < 0.3:
                held = [b for b in range(1, 20) if one.ref_cnt[b]]
                rng.shuffle(held)
                one.free_blocks(held)
                batched.free_blocks(held)
                continue
            block_id = one.get_new_block()
            assert batched.get_new_blocks(1) == [block_id]
            h = rng.choice([None, PRIVATE, 1, 2])  # duplicates of 1 and 2 arise
            if h is PRIVATE:
                one.cache_private_block(block_id)
                batched.cache_private_block(block_id)
            elif h is not None:
                one.cache_block(block_id, h)
                batched.cache_block(block_id, h)
            assert _state(one) == _state(batched)
        one.check_invariants()
