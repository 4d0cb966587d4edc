"""One offload tier (host memory or disk): a bounded set of KV blocks, evicted LRU.

Behaviour matched: vLLM 0.24.0 `vllm/v1/kv_offload/cpu/manager.py` (`CPUOffloadingManager`)
with `vllm/v1/kv_offload/cpu/policies/lru.py` (`LRUCachePolicy`):

- a block is stored under its hash (`prepare_store`) and becomes readable only when its copy
  has landed (`is_ready`); a block being written or being loaded cannot be evicted;
- `lookup` counts the run of leading blocks that are ready;
- `touch` moves blocks to the most-recently-used end (the request's blocks, last block
  first, so its first block ends up most recent);
- `prepare_store` skips blocks already stored, and evicts the least recently used evictable
  blocks to make room, none of the blocks it was asked to store; when too few are
  evictable it refuses (vLLM returns None and the connector retries next step);
- `prepare_load` takes a reference on each block for the load's duration, `complete_load`
  drops it.

With `policy="arc"` the eviction order is vLLM's ARC policy (sim.kv_offload.arc) instead.

Readiness is kept as the simulated time the block's write lands (`ready_s`), so no event is
needed per block: a block is ready at `now` when `ready_s <= now`.

Plain Python, no SimPy: every method takes `now`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable, Iterable, Sequence

from sim.kv_offload.arc import ARCOrder

EPS_S = 1e-9  # a write landing at `now` within float rounding is landed


@dataclass(slots=True)
class TierCounters:
    """What the summary reports per tier, in blocks and bytes."""

    lookups_blocks: int = 0  # blocks a lookup asked for, past the HBM hit
    hit_blocks: int = 0  # blocks loaded back from this tier
    stored_blocks: int = 0  # blocks written into this tier
    evicted_blocks: int = 0  # blocks dropped from this tier to make room
    store_refused_blocks: int = 0  # blocks a store could not place (all others busy)
    bytes_loaded: int = 0  # bytes read out of this tier toward HBM
    bytes_stored: int = 0  # bytes written into this tier


class OffloadTier:
    """A tier of `num_blocks` blocks of `block_bytes` each, LRU over its ready blocks."""

    def __init__(self, name: str, num_blocks: int, block_bytes: int, policy: str = "lru") -> None:
        if num_blocks < 1:
            raise ValueError(f"tier {name} needs at least one block")
        if policy not in ("lru", "arc"):
            raise ValueError(f"unknown eviction policy {policy!r}")
        self.arc = ARCOrder(num_blocks) if policy == "arc" else None
        self.name = name
        self.num_blocks = num_blocks
        self.block_bytes = block_bytes
        # hash -> time its write lands; ordered least to most recently used
        self.blocks: OrderedDict[Hashable, float] = OrderedDict()
        self.load_refs: dict[Hashable, int] = {}  # blocks being loaded, and by how many loads
        self.counters = TierCounters()

    def __len__(self) -> int:
        return len(self.blocks)

    def __contains__(self, key: Hashable) -> bool:
        return key in self.blocks

    def is_ready(self, key: Hashable, now: float) -> bool:
        ready_s = self.blocks.get(key)
        return ready_s is not None and ready_s <= now + EPS_S

    def lookup(self, keys: Iterable[Hashable], now: float) -> int:
        """How many of `keys`, from the first, are stored and ready."""
        blocks = self.blocks
        hits = 0
        for key in keys:
            ready_s = blocks.get(key)
            if ready_s is None or ready_s > now + EPS_S:
                break
            hits += 1
        return hits

    def touch(self, keys: Sequence[Hashable], now: float = 0.0) -> None:
        """Most recently used: the last of `keys` first, so the first ends up most recent."""
        if self.arc is not None:
            self.arc.touch(keys, lambda key: self.is_ready(key, now))
            return
        blocks = self.blocks
        move = blocks.move_to_end
        for key in reversed(keys):
            if key in blocks:
                move(key)

    def prepare_store(
        self, keys: Sequence[Hashable], ready_s: float, now: float
    ) -> tuple[list[Hashable], list[Hashable]] | None:
        """Store the blocks of `keys` not stored yet, readable from `ready_s`: returns (keys
        stored, keys evicted for them), or None when too few blocks can be evicted (nothing
        changes then)."""
        blocks = self.blocks
        to_store = [k for k in keys if k not in blocks]
        if not to_store:
            return [], []
        num_to_evict = len(blocks) + len(to_store) - self.num_blocks
        evicted: list[Hashable] = []
        if num_to_evict > 0:
            protected = set(keys)
            load_refs = self.load_refs
            limit = now + EPS_S
            if self.arc is not None:
                chosen = self.arc.evict(
                    num_to_evict,
                    lambda k: blocks[k] <= limit and k not in load_refs and k not in protected,
                )
                evicted = chosen if chosen is not None else []
            else:
                for key, key_ready_s in blocks.items():  # least recently used first
                    if key_ready_s <= limit and key not in load_refs and key not in protected:
                        evicted.append(key)
                        if len(evicted) == num_to_evict:
                            break
            if len(evicted) < num_to_evict:
                self.counters.store_refused_blocks += len(to_store)
                return None
            for key in evicted:
                del blocks[key]
            self.counters.evicted_blocks += len(evicted)
        for key in to_store:
            blocks[key] = ready_s
        if self.arc is not None:
            for key in to_store:
                self.arc.insert(key)
        self.counters.stored_blocks += len(to_store)
        self.counters.bytes_stored += len(to_store) * self.block_bytes
        return to_store, evicted

    def prepare_load(self, keys: Sequence[Hashable]) -> None:
        """Pin `keys` (all ready) for a load: not evictable until `complete_load`."""
        refs = self.load_refs
        for key in keys:
            refs[key] = refs.get(key, 0) + 1
        self.counters.hit_blocks += len(keys)
        self.counters.bytes_loaded += len(keys) * self.block_bytes

    def complete_load(self, keys: Sequence[Hashable]) -> None:
        refs = self.load_refs
        for key in keys:
            count = refs[key] - 1
            if count:
                refs[key] = count
            else:
                del refs[key]

    def check_invariants(self) -> None:
        """Never over capacity; every pinned block is stored."""
        assert len(self.blocks) <= self.num_blocks, (self.name, len(self.blocks), self.num_blocks)
        assert all(key in self.blocks for key in self.load_refs), self.name
        assert all(count > 0 for count in self.load_refs.values()), self.name
        if self.arc is not None:
            assert len(self.arc) == len(self.blocks), (self.name, len(self.arc), len(self.blocks))
