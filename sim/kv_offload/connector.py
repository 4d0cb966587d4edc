"""KV offloading to host memory (and disk): vLLM's native OffloadingConnector, both sides.

Behaviour matched: vLLM 0.24.0
`vllm/distributed/kv_transfer/kv_connector/v1/offloading_connector.py` and its scheduler side
`.../v1/offloading/scheduler.py` (`OffloadingConnectorScheduler`), worker side
`.../v1/offloading/worker.py`, the CPU manager `vllm/v1/kv_offload/cpu/manager.py` (sim.kv_offload.tier)
and the copy handlers `vllm/v1/kv_offload/worker/cpu_gpu.py` (sim.kv_offload.link):

- **Store on compute.** Every step (`build_connector_meta`), each scheduled request's blocks
  that became full since its last store are written to the host tier (those already there are
  skipped), on the GPU->CPU queue. A finished request whose store is still in flight keeps its
  GPU blocks until the store lands (`request_finished` True, then `finished_sending`).
  DIVERGENCE: vLLM offloads on compute, so a block evicted from HBM is found on the host only
  if it was stored and not evicted there since; LMCache-style evict-to-host would write it at
  eviction. We follow vLLM: the store traffic is every computed block, not only the evicted.
- **Load on a host hit.** For a waiting request, the blocks after its HBM prefix hit that the
  host tier holds, ready, one after the other, are loaded asynchronously
  (`get_num_new_matched_tokens` returns them with `True`): the scheduler allocates their GPU
  blocks and keeps the request in `WAITING_FOR_REMOTE_KVS` (sim.core.scheduler) until the load
  lands on the CPU->GPU queue and is reported in `finished_recving`. Meanwhile the engine runs
  other requests' steps: the load overlaps compute, as vLLM's side stream does. A request whose
  hit blocks are being loaded for another request waits for that load (then finds them in
  HBM), and no more than `max_num_seqs` loads are in flight (vLLM's backpressure).
- **Disk tier** (not in vLLM 0.24.0's native connector; LMCache's local-disk backend):
  DIVERGENCE: blocks the host tier evicts are written down to disk at the disk's write rate
  (a victim cache), where LMCache writes through to every backend; a disk hit is read into a
  host staging buffer at the disk's read rate, then copied to the GPU, and stays on disk only.

DIVERGENCE: a step's stores and loads are submitted when the step is scheduled; vLLM's worker
submits the loads as the step starts executing and defers the stores to the start of the next
step, their stream waiting for the step's kernels (`prepare_store_kv`, `start_kv_transfers`),
and it waits for a preempted request's stores before reusing its blocks. A block so becomes
readable on the host up to one step early, while its request still holds it in HBM, where the
local prefix hit finds it first; and a preemption costs no wait here.

DIVERGENCE: vLLM touches all a request's stored blocks each time it stores new ones; we touch
the new ones as they are stored and all of them once when the request finishes (its last store
is at most a block of tokens earlier), which keeps the per-step work independent of the prompt.

The connector's clock (`now`) and its way to wake an idle engine (`wake_at`, Replica.wake at a
simulated time) are given by the wiring (sim.run): this module has no SimPy.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Callable, Hashable

from sim.core.kv_cache_manager import block_keys
from sim.core.request import Request
from sim.core.scheduler import SchedulerOutput
from sim.kv_offload.link import CopyQueue
from sim.kv_offload.spec import KVOffloadSpec
from sim.kv_offload.tier import EPS_S, OffloadTier


@dataclass(slots=True)
class LoadStats:
    num_loads: int = 0  # load jobs (one per admitted request with a tier hit)
    load_time_s: float = 0.0  # sum over loads of submit -> landed (queueing included)
    max_load_time_s: float = 0.0
    num_delayed: int = 0  # lookups deferred: blocks already loading, or too many loads
    # over finished requests, at their first scheduling: prompt tokens, and those of them that
    # came from a tier (the rest of the cached tokens were HBM prefix hits)
    finished_prompt_tokens: int = 0
    finished_tier_hit_tokens: int = 0


class OffloadingConnector:
    """Scheduler and worker side of KV offloading for one engine replica."""

    def __init__(self, spec: KVOffloadSpec, now: Callable[[], float]) -> None:
        self.spec = spec
        self._now = now
        self.wake_at: Callable[[float], None] | None = None  # set by the wiring
        self.block_size = spec.block_size
        self.cpu = OffloadTier("cpu", spec.cpu.num_blocks, spec.block_bytes, spec.eviction_policy)
        self.h2d = CopyQueue(spec.cpu.read)  # loads: host -> GPU
        self.d2h = CopyQueue(spec.cpu.write)  # stores: GPU -> host
        self.disk: OffloadTier | None = None
        if spec.disk is not None:
            self.disk = OffloadTier("disk", spec.disk.num_blocks, spec.block_bytes, spec.eviction_policy)
            self.disk_read = CopyQueue(spec.disk.read)
            self.disk_write = CopyQueue(spec.disk.write)
        self.stats = LoadStats()
        self._next_stored_block_idx: dict[int, int] = {}
        self._store_end_s: dict[int, float] = {}  # request -> when its last store lands
        self._match: dict[int, tuple[int, list[Hashable], list[Hashable]]] = {}
        self._loading: dict[int, tuple[list[Hashable], list[Hashable], float]] = {}
        self._blocks_being_loaded: set[Hashable] = set()
        self._load_heap: list[tuple[float, int]] = []
        self._send_heap: list[tuple[float, int]] = []
        self._first_lookup: dict[int, int] = {}  # request -> HBM-hit tokens at its first load
        # request -> (cpu, disk) blocks its latest lookup asked for past the HBM hit; counted
        # when the scheduler acts on that lookup (a request retried at the head counts once,
        # with the lookup that admitted it)
        self._lookup: dict[int, tuple[int, int]] = {}

    # ---- scheduler side -------------------------------------------------------------------

    def get_num_new_matched_tokens(
        self, request: Request, num_computed_tokens: int
    ) -> tuple[int | None, bool]:
        """Tokens after the HBM hit that the tiers hold (loaded asynchronously); None: ask
        again next step (blocks already loading for another request, or too many loads)."""
        if len(self._loading) >= self.spec.max_concurrent_loads:
            self.stats.num_delayed += 1
            return None, False
        bs = self.block_size
        num_blocks = request.num_tokens // bs
        if not request.num_preemptions:  # only declared blocks can be someone else's
            num_blocks = min(num_blocks, len(request.block_hashes))
        start = num_computed_tokens // bs
        if num_blocks - start < 1:
            return 0, False
        now = self._now()
        keys = block_keys(request, 0, num_blocks)
        cpu, disk = self.cpu, self.disk
        cpu.touch(keys, now)
        if disk is not None:
            disk.touch(keys, now)
        rid = request.request_id
        cpu_keys: list[Hashable] = []
        disk_keys: list[Hashable] = []
        for key in keys[start:]:
            if cpu.is_ready(key, now):
                cpu_keys.append(key)
            elif disk is not None and disk.is_ready(key, now):
                disk_keys.append(key)
            else:
                break
        self._lookup[rid] = (num_blocks - start, num_blocks - start - len(cpu_keys))
        if not cpu_keys and not disk_keys:
            return 0, False
        loading = self._blocks_being_loaded
        if loading and (any(k in loading for k in cpu_keys) or any(k in loading for k in disk_keys)):
            self.stats.num_delayed += 1
            return None, False
        self._match[rid] = (start, cpu_keys, disk_keys)
        return (len(cpu_keys) + len(disk_keys)) * bs, True

    def update_state_after_alloc(self, request: Request, num_external_tokens: int) -> None:
        """Blocks are allocated: start the load the last lookup promised."""
        rid = request.request_id
        looked_up = self._lookup.pop(rid, None)  # admitted: a lookup after a preemption counts again
        if looked_up is not None:
            self.cpu.counters.lookups_blocks += looked_up[0]
            if self.disk is not None:
                self.disk.counters.lookups_blocks += looked_up[1]
        match = self._match.pop(rid, None)
        if num_external_tokens == 0 or match is None:
            return
        start, cpu_keys, disk_keys = match
        now = self._now()
        spec = self.spec
        block_bytes = spec.block_bytes
        ready_s = now
        if disk_keys:
            assert self.disk is not None
            ready_s = self.disk_read.submit(now, 0, len(disk_keys) * block_bytes)
            self.disk.prepare_load(disk_keys)
        self.cpu.prepare_load(cpu_keys)
        num = len(cpu_keys) + len(disk_keys)
        end_s = self.h2d.submit(ready_s, num * spec.copies_per_block, num * block_bytes)
        self._loading[rid] = (cpu_keys, disk_keys, now)
        self._blocks_being_loaded.update(cpu_keys)
        self._blocks_being_loaded.update(disk_keys)
        heapq.heappush(self._load_heap, (end_s, rid))
        self._next_stored_block_idx[rid] = start + num
        if request.num_cached_tokens < 0:  # its first scheduling is still to come
            self._first_lookup.setdefault(rid, start * self.block_size)
        self._wake(end_s)

    def build_connector_meta(self, output: SchedulerOutput) -> None:
        """Store the blocks each scheduled request filled since its last store."""
        bs = self.block_size
        nxt = self._next_stored_block_idx
        now = -1.0
        for requests in (output.decodes, output.others):
            for request in requests:
                num_blocks = request.num_computed_tokens // bs
                start = nxt.get(request.request_id, 0)
                if num_blocks > start:
                    if now < 0.0:
                        now = self._now()
                    self._store(request, start, num_blocks, now)

    def _store(self, request: Request, start: int, end: int, now: float) -> None:
        cpu = self.cpu
        spec = self.spec
        keys = block_keys(request, start, end)
        stored = cpu.prepare_store(keys, float("inf"), now)
        if stored is None:
            return  # no room now (every block busy): tried again next step, as vLLM does
        new_keys, evicted = stored
        self._next_stored_block_idx[request.request_id] = end
        if new_keys:
            num = len(new_keys)
            end_s = self.d2h.submit(
                now, num * spec.copies_per_block, num * spec.block_bytes
            )
            blocks = cpu.blocks
            for key in new_keys:
                blocks[key] = end_s  # readable once the copy lands (order unchanged)
            rid = request.request_id
            if end_s > self._store_end_s.get(rid, 0.0):
                self._store_end_s[rid] = end_s
        if evicted and self.disk is not None:
            ready_s = self.disk_write.submit(now, 0, len(evicted) * spec.block_bytes)
            self.disk.prepare_store(evicted, ready_s, now)

    def request_finished(self, request: Request) -> bool:
        """True while its blocks are still being stored: the scheduler keeps them until then."""
        rid = request.request_id
        num_stored = self._next_stored_block_idx.pop(rid, 0)
        if num_stored:
            self.cpu.touch(block_keys(request, 0, num_stored), self._now())
        self._match.pop(rid, None)
        self._lookup.pop(rid, None)
        stats = self.stats
        stats.finished_prompt_tokens += request.num_prompt_tokens
        local = self._first_lookup.pop(rid, None)
        if local is not None and request.num_cached_tokens > local:
            stats.finished_tier_hit_tokens += request.num_cached_tokens - local
        end_s = self._store_end_s.pop(rid, 0.0)
        if end_s > self._now() + EPS_S:
            heapq.heappush(self._send_heap, (end_s, rid))
            self._wake(end_s)
            return True
        return False

    # ---- worker side ------------------------------------------------------------------------

    def get_finished(self) -> tuple[set[int], set[int]]:
        """(finished_sending, finished_recving) since the last call: the transfers landed."""
        now = self._now() + EPS_S
        finished_recving: set[int] = set()
        finished_sending: set[int] = set()
        loads = self._load_heap
        while loads and loads[0][0] <= now:
            end_s, rid = heapq.heappop(loads)
            cpu_keys, disk_keys, submit_s = self._loading.pop(rid)
            self.cpu.complete_load(cpu_keys)
            if disk_keys:
                assert self.disk is not None
                self.disk.complete_load(disk_keys)
            self._blocks_being_loaded.difference_update(cpu_keys)
            self._blocks_being_loaded.difference_update(disk_keys)
            stats = self.stats
            stats.num_loads += 1
            stats.load_time_s += end_s - submit_s
            stats.max_load_time_s = max(stats.max_load_time_s, end_s - submit_s)
            finished_recving.add(rid)
        sends = self._send_heap
        while sends and sends[0][0] <= now:
            finished_sending.add(heapq.heappop(sends)[1])
        return finished_sending, finished_recving

    def _wake(self, at_s: float) -> None:
        if self.wake_at is not None:
            self.wake_at(at_s)

    @property
    def num_in_flight(self) -> int:
        return len(self._loading) + len(self._send_heap)

    def check_invariants(self) -> None:
        """Blocks are conserved across tiers: a tier holds what was stored in it minus what
        it evicted, never more than its size; the disk holds only what the host evicted; a
        block being loaded is pinned where it is read from, and pinned nowhere else."""
        tiers = [self.cpu] + ([self.disk] if self.disk is not None else [])
        for tier in tiers:
            tier.check_invariants()
            c = tier.counters
            assert c.stored_blocks - c.evicted_blocks == len(tier), (tier.name, c, len(tier))
        if self.disk is not None:
            assert self.disk.counters.stored_blocks <= self.cpu.counters.evicted_blocks
        pinned = sum(len(c) + len(d) for c, d, _ in self._loading.values())
        assert pinned == len(self._blocks_being_loaded)
        assert sum(self.cpu.load_refs.values()) == sum(len(c) for c, _, _ in self._loading.values())
