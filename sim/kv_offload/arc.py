"""The ARC eviction order of an offload tier (`kv_offload.eviction_policy=arc`).

Behaviour matched: vLLM 0.24.0 `vllm/v1/kv_offload/cpu/policies/arc.py` (`ARCCachePolicy`):

- T1 holds blocks seen once, T2 blocks touched again; B1 and B2 are ghost lists of the keys
  recently evicted from T1 and T2, each at most the tier's size;
- a new block enters T1 (and leaves the ghost lists);
- a touch (last key first) moves a ready T1 block to T2, a T2 block to T2's most recent end;
  a touch of a key in B1 raises the target size of T1 by max(1, |B2| / |B1|), one in B2
  lowers it by max(1, |B1| / |B2|);
- eviction takes T1's least recent evictable block while T1 is at least its target size,
  otherwise T2's, and puts the evicted keys in the ghost list of where they came from.

The tier (sim.kv_offload.tier) keeps the blocks and their readiness; this keeps the order.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable, Iterator, Sequence


class ARCOrder:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.target_t1_size = 0.0
        self.t1: OrderedDict[Hashable, None] = OrderedDict()
        self.t2: OrderedDict[Hashable, None] = OrderedDict()
        self.b1: OrderedDict[Hashable, None] = OrderedDict()
        self.b2: OrderedDict[Hashable, None] = OrderedDict()

    def insert(self, key: Hashable) -> None:
        self.t1[key] = None
        self.b1.pop(key, None)
        self.b2.pop(key, None)

    def touch(self, keys: Sequence[Hashable], is_ready: Callable[[Hashable], bool]) -> None:
        t1, t2, b1, b2 = self.t1, self.t2, self.b1, self.b2
        for key in reversed(keys):
            if key in t1:
                del t1[key]
                if is_ready(key):
                    t2[key] = None
                else:  # just prepared to be stored, not touched twice: most recent in T1
                    t1[key] = None
            elif key in t2:
                t2.move_to_end(key)
            elif key in b1:
                delta = max(1.0, len(b2) / len(b1))
                self.target_t1_size = min(self.target_t1_size + delta, self.capacity)
                b1.move_to_end(key)
            elif key in b2:
                delta = max(1.0, len(b1) / len(b2))
                self.target_t1_size = max(self.target_t1_size - delta, 0.0)
                b2.move_to_end(key)

    def evict(self, n: int, evictable: Callable[[Hashable], bool]) -> list[Hashable] | None:
        """The n keys to evict in ARC order, moved to the ghost lists; None (and nothing
        changes) when fewer than n are evictable."""
        chosen: list[tuple[Hashable, bool]] = []  # (key, from T1)
        virtual_t1_size = len(self.t1)
        t1_iter, t2_iter = iter(self.t1), iter(self.t2)

        def next_candidate(keys: Iterator[Hashable]) -> Hashable | None:
            for key in keys:
                if evictable(key):
                    return key
            return None

        while len(chosen) < n:
            if virtual_t1_size >= int(self.target_t1_size):
                key = next_candidate(t1_iter)
                if key is not None:
                    chosen.append((key, True))
                    virtual_t1_size -= 1
                    continue
            key = next_candidate(t2_iter)
            if key is None:  # as vLLM: T1 below its target and T2 exhausted refuses
                return None
            chosen.append((key, False))
        for key, from_t1 in chosen:
            if from_t1:
                del self.t1[key]
                self.b1[key] = None
            else:
                del self.t2[key]
                self.b2[key] = None
        for ghost in (self.b1, self.b2):
            for _ in range(len(ghost) - self.capacity):
                ghost.popitem(last=False)
        return [key for key, _ in chosen]

    def __len__(self) -> int:
        return len(self.t1) + len(self.t2)
