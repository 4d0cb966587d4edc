"""The scheduler's view of the KV cache: may this request have slots for n more tokens?

Behaviour matched: vLLM `vllm/v1/core/kv_cache_manager.py` and `single_type_kv_cache_manager.py`
(as read on main at commit 00024d31) for one full-attention KV-cache group:

- `get_computed_blocks`: the longest run of the request's leading full blocks already in the
  prefix cache, capped so that at least the last token is computed (its logits are needed).
- `allocate_slots`: blocks for `num_computed_tokens + num_new_tokens` tokens; `None` when the
  free queue cannot supply them (cache hits still in the free queue count against it, since
  taking them removes them from the queue). Full blocks are published in the prefix cache as
  soon as they are scheduled, as vLLM does.
- `free`: blocks are released tail first so that a request's shared prefix is evicted last.

A block's identity is its hash: a prompt block takes the request's `block_hashes` entry, any
later block (outputs, or a prompt without hashes) a key unique to the request. Other requests
hit only the blocks the workload declares shared; a preempted request, coming back, finds its
own blocks that are still cached, outputs included, as vLLM's block hashes (which grow with
the output) let it.

Only its own request can ask for a block under a key unique to it, and only after it was reset
(preempted, or its blocks released while it waited). So until then such blocks are cached
privately (`BlockPool.cache_private_blocks`, no hash-map entry), and a reset publishes them
under their keys before freeing them: the map holds then what it would hold had they been
published at once, and every later block of that request is published at once.
"""

from __future__ import annotations

from typing import Sequence

from sim.core.block_pool import BlockPool, UncachedBlockPool
from sim.core.request import Request, RequestStatus


def block_keys(request: Request, start: int, end: int) -> list[object]:
    """Identities of the request's blocks `start` to `end - 1`: its declared hashes, then keys
    unique to it. The one naming of a block, for the prefix cache and the offload tiers."""
    declared = request.block_hashes
    num_declared = len(declared)
    if end <= num_declared:
        return list(declared[start:end])
    request_id = request.request_id
    return [declared[i] if i < num_declared else (request_id, i) for i in range(start, end)]


class KVCacheManager:
    def __init__(
        self, num_gpu_blocks: int, block_size: int, max_model_len: int, enable_caching: bool
    ) -> None:
        self.block_size = block_size
        self.max_model_len = max_model_len
        self.enable_caching = enable_caching
        self.block_pool: BlockPool | UncachedBlockPool = (
            BlockPool(num_gpu_blocks)
            if enable_caching
            else UncachedBlockPool(num_gpu_blocks)
        )
        # request_id -> number of its leading blocks already published in the prefix cache
        self._num_cached_blocks: dict[int, int] = {}
        # Requests reset at least once: their own blocks are published in the hash map.
        self._published_own: set[int] = set()

    @property
    def num_usable_blocks(self) -> int:
        return self.block_pool.num_usable_blocks

    @property
    def num_used_blocks(self) -> int:
        return self.block_pool.num_used_blocks

    @property
    def usage(self) -> float:
        return self.block_pool.num_used_blocks / self.block_pool.num_usable_blocks

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def get_computed_blocks(self, request: Request) -> tuple[list[int], int]:
        """Cached leading blocks of a request that has computed nothing yet, and their tokens."""
        if not self.enable_caching:
            return [], 0
        max_hit_blocks = (request.num_tokens - 1) // self.block_size
        if not request.num_preemptions:  # only declared blocks can be someone else's
            max_hit_blocks = min(max_hit_blocks, len(request.block_hashes))
        pool = self.block_pool
        hits: list[int] = []
        for block_hash in block_keys(request, 0, max_hit_blocks):
            block_id = pool.get_cached_block(block_hash)
            if block_id is None:
                break
            hits.append(block_id)
        return hits, len(hits) * self.block_size

    def allocate_slots(
        self,
        request: Request,
        num_new_tokens: int,
        num_new_computed_tokens: int = 0,
        new_computed_blocks: list[int] | None = None,
        num_external_computed_tokens: int = 0,
        delay_cache_blocks: bool = False,
        full_sequence_must_fit: bool = False,
    ) -> bool:
        """Reserve slots for `num_new_tokens` more tokens; False if the blocks are not free.

        `num_external_computed_tokens` follow the local prefix hit and come from a KV connector
        (sim.core.kv_connector): they need slots like new tokens. While they load
        asynchronously (`delay_cache_blocks`), none of the request's blocks is published in the
        prefix cache; `cache_blocks` publishes them once the load has landed.

        `full_sequence_must_fit`: the admission gate of vLLM 0.24.0 (`scheduler_reserve_full_isl`,
        `vllm/v1/core/kv_cache_manager.py` `allocate_slots`): a waiting request gets its first
        chunk only if the free blocks could hold its whole sequence so far, so that chunked
        prefill does not admit more than the cache can finish."""
        pool = self.block_pool
        block_ids = request.block_ids
        num_computed_tokens = (
            request.num_computed_tokens + num_new_computed_tokens + num_external_computed_tokens
        )
        num_tokens_need_slot = min(num_computed_tokens + num_new_tokens, self.max_model_len)
        num_required_blocks = -(-num_tokens_need_slot // self.block_size)
        if full_sequence_must_fit and not self._full_sequence_fits(request, new_computed_blocks):
            return False
        if not new_computed_blocks:
            num_new_blocks = num_required_blocks - len(block_ids)
            if num_new_blocks > pool.get_num_free_blocks():
                return False
        else:
            num_new_blocks = num_required_blocks - len(block_ids) - len(new_computed_blocks)
            # Hits still in the free queue leave it when touched: they count against it too.
            num_evictable_hits = sum(1 for b in new_computed_blocks if pool.ref_cnt[b] == 0)
            if num_new_blocks + num_evictable_hits > pool.get_num_free_blocks():
                return False
            pool.touch(new_computed_blocks)
            block_ids.extend(new_computed_blocks)
        if num_new_blocks > 0:
            block_ids += pool.get_new_blocks(num_new_blocks)
        if not delay_cache_blocks:
            self._cache_known_blocks(request, num_computed_tokens + num_new_tokens)
        return True

    def _cache_known_blocks(self, request: Request, num_tokens: int) -> None:
        """Publish the full blocks of the request's first `num_tokens` tokens that are known: an
        in-flight step's sampled token is not yet (vLLM's request.num_tokens leaves output
        placeholders out). Under async scheduling the rest is published when the step lands
        (Scheduler.update_from_output)."""
        self.cache_blocks(request, min(num_tokens, request.num_tokens - request.num_output_placeholders))

    def _full_sequence_fits(self, request: Request, new_computed_blocks: list[int] | None) -> bool:
        """Whether the free blocks hold all of the request's tokens so far, past its hits."""
        pool = self.block_pool
        hits = new_computed_blocks or ()
        num_full_blocks = -(-min(request.num_tokens, self.max_model_len) // self.block_size)
        num_new_blocks = max(num_full_blocks - len(request.block_ids) - len(hits), 0)
        # Hits still in the free queue leave it when touched: they count against it too.
        num_evictable_hits = sum(1 for b in hits if pool.ref_cnt[b] == 0)
        return num_new_blocks + num_evictable_hits <= pool.get_num_free_blocks()

    def allocate_decode_slot(self, request: Request) -> bool:
        """`allocate_slots(request, 1)` for a steady decode (one new token, nothing computed or
        loaded from elsewhere), which the scheduler calls when the token starts or fills a
        block: the same blocks taken and published, through the single-block paths."""
        block_size = self.block_size
        num_computed_tokens = request.num_computed_tokens
        block_ids = request.block_ids
        num_new_blocks = -(-min(num_computed_tokens + 1, self.max_model_len) // block_size) - len(block_ids)
        if num_new_blocks > 0:
            pool = self.block_pool
            if num_new_blocks > pool.get_num_free_blocks():
                return False
            if num_new_blocks == 1:
                block_ids.append(pool.get_new_block())
            else:
                block_ids += pool.get_new_blocks(num_new_blocks)
        self._cache_known_blocks(request, num_computed_tokens + 1)
        return True

    def cache_blocks(self, request: Request, num_computed_tokens: int) -> None:
        """Publish the request's full blocks up to `num_computed_tokens` in the prefix cache
        (vLLM's `KVCacheManager.cache_blocks`: once a connector's load has landed, or a step's
        tokens have)."""
        if self.enable_caching:
            start = self._num_cached_blocks.get(request.request_id, 0)
            num_full_blocks = num_computed_tokens // self.block_size
            if num_full_blocks > start:
                self._cache_full_blocks(request, start, num_full_blocks)

    def _cache_full_blocks(self, request: Request, start: int, num_full_blocks: int) -> None:
        """Publish the request's blocks `start` (the first not yet published) up to
        `num_full_blocks` (> start): declared ones under their hashes, the request's own ones
        privately or, once it was reset, under their keys (`block_keys`)."""
        request_id = request.request_id
        pool = self.block_pool
        block_ids = request.block_ids
        num_declared = len(request.block_hashes)
        private = request_id not in self._published_own
        if num_full_blocks == start + 1:  # a decode filled its last block: one to publish
            if private and start >= num_declared:
                pool.cache_private_block(block_ids[start])
            else:
                pool.cache_block(block_ids[start], block_keys(request, start, num_full_blocks)[0])
            self._num_cached_blocks[request_id] = num_full_blocks
            return
        # Blocks from `first_private` on are the request's own, cached privately.
        first_private = min(max(start, num_declared), num_full_blocks) if private else num_full_blocks
        if first_private > start:
            pool.cache_full_blocks(block_ids[start:first_private], block_keys(request, start, first_private))
        if num_full_blocks > first_private:
            pool.cache_private_blocks(block_ids[first_private:num_full_blocks])
        self._num_cached_blocks[request_id] = num_full_blocks

    def free(self, request: Request) -> None:
        """Release a finished or reset request's blocks, tail first. A reset request may look
        its own blocks up when it comes back: they are published first."""
        request_id = request.request_id
        if request.status == RequestStatus.FINISHED:
            self._published_own.discard(request_id)
        elif self.enable_caching and request_id not in self._published_own:
            self._published_own.add(request_id)
            first_own = len(request.block_hashes)
            num_cached = self._num_cached_blocks.get(request_id, 0)
            if num_cached > first_own:
                self.block_pool.publish_private_blocks(
                    request.block_ids[first_own:num_cached], block_keys(request, first_own, num_cached)
                )
        if request.block_ids:
            self.block_pool.free_blocks(request.block_ids[::-1])
            request.block_ids = []
        self._num_cached_blocks.pop(request_id, None)
