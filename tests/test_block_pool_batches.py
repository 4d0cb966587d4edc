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
