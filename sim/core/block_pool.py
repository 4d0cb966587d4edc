"""Paged KV blocks: reference counts, an LRU free queue, and the prefix-cache hash map.

Behaviour matched: vLLM 0.24.0 `vllm/v1/core/block_pool.py` (checked step by step against
vLLM's own scheduler by tests/test_vllm_differential.py). Block 0 is the reserved null block
and is never handed out, so a pool of N blocks has N - 1 usable ones. Free blocks wait in a
queue: allocation takes from the front (the least recently freed); freeing appends a block
with a hash at the back and puts one without (it can never be hit) at the front. A freed block
keeps its hash and stays findable in the prefix cache until allocation evicts it, so eviction
is LRU over freed blocks.

We keep the queue in an `OrderedDict` (C-implemented doubly linked list): O(1) pop from the
front, append, and removal of a cached block that a new request touches.

A block whose hash only its own request can ever ask for (its outputs, or a prompt without
declared hashes, before the request was ever reset) is marked `PRIVATE` instead of being
entered in the hash map: no other request can hit it, and its request looks blocks up only
after a reset, when the KV manager publishes them (`publish_private_blocks`). Until then a
map entry would be written and deleted unread, for almost every block of a run.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

NULL_BLOCK_ID = 0


class _Private:
    """The hash of a block cached for its own request only (see the module docstring)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PRIVATE"


PRIVATE = _Private()


class BlockPool:
    """The block pool with prefix caching (see UncachedBlockPool for the pool without it)."""

    enable_caching = True

    def __init__(self, num_gpu_blocks: int) -> None:
        if num_gpu_blocks < 2:
            raise ValueError("a block pool needs the null block plus at least one usable block")
        self.num_gpu_blocks = num_gpu_blocks
        self.ref_cnt: list[int] = [0] * num_gpu_blocks
        self.block_hash: list[int | None] = [None] * num_gpu_blocks
        self.cached_block_hash_to_block: dict[int, int] = {}
        # Further blocks holding a hash already published (vLLM keeps every block of a hash,
        # `BlockHashToBlockMap`); one takes over when the published block is evicted.
        self._same_hash_blocks: dict[int, list[int]] = {}
        self.free_block_queue: OrderedDict[int, None] = OrderedDict.fromkeys(
            range(1, num_gpu_blocks)
        )
        # Acquisitions (a free block's reference count leaving zero: a new block, or a cache
        # hit revived from the free queue) and releases (a count returning to zero). With no
        # request holding blocks the two are equal: the run leaked nothing.
        self.num_acquired_total = 0
        self.num_released_total = 0
        self.num_evicted_total = 0  # cached blocks whose hash was dropped to reuse them

    @property
    def num_usable_blocks(self) -> int:
        return self.num_gpu_blocks - 1

    def get_num_free_blocks(self) -> int:
        return len(self.free_block_queue)

    @property
    def num_used_blocks(self) -> int:
        return self.num_usable_blocks - len(self.free_block_queue)

    def get_new_blocks(self, num_blocks: int) -> list[int]:
        """Take `num_blocks` from the front of the free queue; the caller checked they exist.

        A block that still holds a hash is evicted from the prefix cache as it is taken."""
        popitem = self.free_block_queue.popitem
        ref_cnt = self.ref_cnt
        block_hash = self.block_hash
        table = self.cached_block_hash_to_block
        blocks: list[int] = []
        append = blocks.append
        num_evicted = 0
        # One loop for the pop and the eviction: a prefill takes tens of blocks at once.
        for _ in range(num_blocks):
            block_id = popitem(last=False)[0]
            append(block_id)
            ref_cnt[block_id] = 1
            old_hash = block_hash[block_id]
            if old_hash is None:
                continue
            if old_hash is PRIVATE:  # in no map: dropping the mark evicts it
                block_hash[block_id] = None
                num_evicted += 1
                continue
            if self._same_hash_blocks:  # duplicates exist somewhere: the general path
                self._evict(block_id)
                continue
            block_hash[block_id] = None  # the common case, inlined: no other block holds it
            if table.get(old_hash) == block_id:
                del table[old_hash]
            num_evicted += 1
        self.num_evicted_total += num_evicted
        self.num_acquired_total += num_blocks
        return blocks

    def get_new_block(self) -> int:
        """One block from the front of the free queue, as `get_new_blocks(1)` takes it, without
        its loop and list: a decode crossing into a new block, the pool's most frequent call."""
        block_id = self.free_block_queue.popitem(last=False)[0]
        self.ref_cnt[block_id] = 1
        self.num_acquired_total += 1
        if self.block_hash[block_id] is not None:
            self._evict(block_id)
        return block_id

    def _evict(self, block_id: int) -> None:
        block_hash = self.block_hash[block_id]
        self.block_hash[block_id] = None
        others = self._same_hash_blocks.get(block_hash)
        if self.cached_block_hash_to_block.get(block_hash) == block_id:
            if others:
                self.cached_block_hash_to_block[block_hash] = others.pop()
            else:
                del self.cached_block_hash_to_block[block_hash]
        elif others:
            others.remove(block_id)
        if others is not None and not others:
            del self._same_hash_blocks[block_hash]
        self.num_evicted_total += 1

    def get_cached_block(self, block_hash: int) -> int | None:
        return self.cached_block_hash_to_block.get(block_hash)

    def touch(self, block_ids: list[int]) -> None:
        """Take a reference on cache hits; a hit sitting in the free queue leaves it."""
        for block_id in block_ids:
            if self.ref_cnt[block_id] == 0:
                del self.free_block_queue[block_id]
                self.num_acquired_total += 1
            self.ref_cnt[block_id] += 1

    def cache_block(self, block_id: int, block_hash: int) -> None:
        """Publish a full block under its hash. A hash already published keeps its block for
        lookups; the new one is kept too and takes over if that one is evicted (vLLM 0.24.0
        `vllm/v1/core/block_pool.py` keeps all blocks of a hash)."""
        if self.block_hash[block_id] is not None:
            return
        self.block_hash[block_id] = block_hash
        if self.cached_block_hash_to_block.setdefault(block_hash, block_id) != block_id:
            self._same_hash_blocks.setdefault(block_hash, []).append(block_id)

    def cache_full_blocks(self, block_ids: list[int], block_hashes: Sequence[object]) -> None:
        """`cache_block` for each pair, in one loop (vLLM's `BlockPool.cache_full_blocks`):
        a prefill publishes tens of blocks at once."""
        block_hash = self.block_hash
        setdefault = self.cached_block_hash_to_block.setdefault
        for block_id, new_hash in zip(block_ids, block_hashes):
            if block_hash[block_id] is not None:
                continue
            block_hash[block_id] = new_hash
            if setdefault(new_hash, block_id) != block_id:
                self._same_hash_blocks.setdefault(new_hash, []).append(block_id)

    def cache_private_block(self, block_id: int) -> None:
        """Mark a freshly computed full block as cached for its own request only."""
        if self.block_hash[block_id] is None:
            self.block_hash[block_id] = PRIVATE

    def cache_private_blocks(self, block_ids: Sequence[int]) -> None:
        """`cache_private_block` for each, in one loop."""
        block_hash = self.block_hash
        for block_id in block_ids:
            if block_hash[block_id] is None:
                block_hash[block_id] = PRIVATE

    def publish_private_blocks(self, block_ids: Sequence[int], block_hashes: Sequence[object]) -> None:
        """Enter private blocks in the hash map under their hashes (`cache_full_blocks`' rules),
        in the order given: their request was reset and may look them up."""
        block_hash = self.block_hash
        for block_id in block_ids:
            if block_hash[block_id] is PRIVATE:
                block_hash[block_id] = None
        self.cache_full_blocks(block_ids, block_hashes)

    def free_blocks(self, ordered_block_ids: list[int]) -> None:
        """Drop one reference each; blocks reaching zero join the free queue in the order given
        (the caller passes a request's blocks tail first, so its last blocks are evicted before
        its shared prefix): a block with a hash at the back, one without (it can never be hit)
        at the front, to be reused first (vLLM 0.24.0 `BlockPool.free_blocks`)."""
        ref_cnt = self.ref_cnt
        block_hash = self.block_hash
        queue = self.free_block_queue
        num_released = 0
        unhashed: list[int] = []
        for block_id in ordered_block_ids:
            count = ref_cnt[block_id] - 1
            ref_cnt[block_id] = count
            if not count:
                if block_hash[block_id] is None:
                    unhashed.append(block_id)
                else:
                    queue[block_id] = None
                num_released += 1
        for block_id in reversed(unhashed):  # the first given ends up at the very front
            queue[block_id] = None
            queue.move_to_end(block_id, last=False)
        self.num_released_total += num_released

    def check_invariants(self) -> None:
        """Free plus referenced blocks equal the usable total; no free block is referenced."""
        referenced = sum(1 for c in self.ref_cnt[1:] if c > 0)
        assert referenced + len(self.free_block_queue) == self.num_usable_blocks, (
            referenced,
            len(self.free_block_queue),
            self.num_usable_blocks,
        )
        assert all(self.ref_cnt[b] == 0 for b in self.free_block_queue)
        assert self.ref_cnt[NULL_BLOCK_ID] == 0 and NULL_BLOCK_ID not in self.free_block_queue


class UncachedBlockPool:
    """The block pool without prefix caching: free blocks are interchangeable, nothing is ever
    taken from the middle of the queue, so a list used as a stack does the job with slices.

    Same interface as `BlockPool` for what the KV manager calls when caching is off. Which
    free block a request gets differs from vLLM's queue order, which nothing observable
    depends on without caching.
    """

    enable_caching = False

    def __init__(self, num_gpu_blocks: int) -> None:
        if num_gpu_blocks < 2:
            raise ValueError("a block pool needs the null block plus at least one usable block")
        self.num_gpu_blocks = num_gpu_blocks
        self._free: list[int] = list(range(num_gpu_blocks - 1, NULL_BLOCK_ID, -1))
        self.num_acquired_total = 0
        self.num_released_total = 0
        self.num_evicted_total = 0

    @property
    def num_usable_blocks(self) -> int:
        return self.num_gpu_blocks - 1

    def get_num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_usable_blocks - len(self._free)

    def get_new_blocks(self, num_blocks: int) -> list[int]:
        free = self._free
        blocks = free[-num_blocks:]
        del free[-num_blocks:]
        self.num_acquired_total += num_blocks
        return blocks

    def get_new_block(self) -> int:
        self.num_acquired_total += 1
        return self._free.pop()  # the block get_new_blocks(1) takes

    def free_blocks(self, ordered_block_ids: list[int]) -> None:
        self._free += ordered_block_ids
        self.num_released_total += len(ordered_block_ids)

    def check_invariants(self) -> None:
        """Free blocks are distinct real blocks, and held = acquired - released."""
        free = self._free
        assert len(set(free)) == len(free) and NULL_BLOCK_ID not in free
        assert all(0 < b < self.num_gpu_blocks for b in free)
        assert self.num_acquired_total - self.num_released_total == self.num_used_blocks

