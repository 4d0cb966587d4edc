"""Cache-aware routing: score every instance by the prefix hit it would give, its queue and its
KV use, and pick the best, as llm-d's inference scheduler does.

Matched: llm-d-inference-scheduler's scorers, each a score in [0, 1] summed with weights:

- prefix-cache scorer: the share of the request's leading KV blocks (block hashes) found in
  the instance's cache, as its router-side index knows it. The index is built from the
  routing decisions themselves (the scorer's approximate mode: a request routed to an
  instance will have its blocks there) and holds at most the instance's KV blocks, least
  recently used dropped first; what was routed becomes visible only `lag_s` later, the time
  KV events or the prefill take to reach the router;
- queue scorer: (max - q) / (max - min) over the instances' waiting queues (1 for all when
  equal), the queue divided by the instance's relative capacity in a mixed pool;
- kv-cache-utilization scorer: 1 - KV cache usage.

DIVERGENCE: the index does not see evictions the instance makes before its LRU bound is
reached, so under KV pressure it can overestimate a hit (llm-d's approximate scorer has the
same blind spot; its precise mode subscribes to the engines' KV events).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any, Sequence


class PrefixIndex:
    """Per instance, the block hashes the router believes cached, bounded LRU, lagged."""

    def __init__(self, capacities_blocks: Sequence[int], lag_s: float) -> None:
        self._lru: list[OrderedDict[int, None]] = [OrderedDict() for _ in capacities_blocks]
        self._capacity = list(capacities_blocks)
        self._lag_s = lag_s
        self._pending: deque[tuple[float, int, tuple[int, ...]]] = deque()

    def match(self, instance: int, hashes: tuple[int, ...]) -> int:
        """Leading blocks of `hashes` the index holds for `instance`."""
        lru = self._lru[instance]
        n = 0
        for h in hashes:
            if h not in lru:
                break
            n += 1
        return n

    def add(self, instance: int, hashes: tuple[int, ...], now_s: float) -> None:
        if not hashes:
            return
        if self._lag_s > 0.0:
            self._pending.append((now_s + self._lag_s, instance, hashes))
        else:
            self._insert(instance, hashes)

    def advance(self, now_s: float) -> None:
        pending = self._pending
        while pending and pending[0][0] <= now_s:
            _, instance, hashes = pending.popleft()
            self._insert(instance, hashes)

    def _insert(self, instance: int, hashes: tuple[int, ...]) -> None:
        lru = self._lru[instance]
        for h in hashes:
            lru[h] = None
            lru.move_to_end(h)
        excess = len(lru) - self._capacity[instance]
        for _ in range(max(excess, 0)):
            lru.popitem(last=False)


class CacheAwareRouter:
    def __init__(self, replicas: Sequence[Any], weights: Any) -> None:
        self.weights = weights
        self.index = PrefixIndex(
            [r.scheduler.kv_cache_manager.num_usable_blocks for r in replicas], weights.lag_s
        )
        top = max(r.capacity for r in replicas)
        self._relative = [r.capacity / top for r in replicas]
        self.num_routed = 0
        self.num_hit_blocks = 0  # blocks the router expected to hit, over every request

    def route(self, replicas: Sequence[Any], request: Any) -> int:
        now_s = request.arrival_s
        index = self.index
        index.advance(now_s)
        hashes: tuple[int, ...] = request.block_hashes
        w = self.weights
        queues = [
            (len(r.scheduler.waiting) + len(r.in_transit)) / rel for r, rel in zip(replicas, self._relative)
        ]
        q_min, q_max = min(queues), max(queues)
        best, best_score, best_hit = 0, -1.0, 0
        for i, replica in enumerate(replicas):
            hit = index.match(i, hashes) if hashes else 0
            prefix = hit / len(hashes) if hashes else 0.0
            queue = (q_max - queues[i]) / (q_max - q_min) if q_max > q_min else 1.0
            kv = 1.0 - replica.scheduler.kv_cache_manager.usage
            score = w.prefix_weight * prefix + w.queue_weight * queue + w.kv_cache_weight * kv
            if score > best_score:
                best, best_score, best_hit = i, score, hit
        index.add(best, hashes, now_s)
        self.num_routed += 1
        self.num_hit_blocks += best_hit
        return best
