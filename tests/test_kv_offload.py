"""KV offloading (sim.kv_offload), worked out by hand: the host tier's LRU eviction, the price
of a copy job, and a host hit loaded back through the scheduler (block size 4, ten KV blocks,
nine usable)."""

from __future__ import annotations

import pytest
import simpy

from engine_driver import make_scheduler, req, step
from sim.core.engine_clock import EngineClock
from sim.core.request import RequestStatus
from sim.kv_offload.connector import OffloadingConnector
from sim.kv_offload.link import CopyQueue, LinkSpec
from sim.kv_offload.spec import KVOffloadSpec, TierSpec
from sim.kv_offload.tier import OffloadTier
from sim.metrics.recorder import Recorder
from sim.simulation import Replica
from test_engine_timing import COSTS, GPU_S, FixedCost

# A link priced in round numbers: 10 kB blocks at 1 MB/s (10 ms each), 10 ms per job, 1 ms
# per memcpy.
BLOCK_BYTES = 10_000
LINK = LinkSpec(bandwidth=1e6, latency_s=0.010, per_copy_s=0.001)


def spec(cpu_blocks: int = 20, disk_blocks: int = 0, copies_per_block: int = 1) -> KVOffloadSpec:
    disk = None
    if disk_blocks:
        disk = TierSpec("disk", disk_blocks * BLOCK_BYTES, disk_blocks,
                        LinkSpec(1e5, 0.001), LinkSpec(1e5, 0.001))  # fmt: skip
    return KVOffloadSpec(
        cpu=TierSpec("cpu", cpu_blocks * BLOCK_BYTES, cpu_blocks, LINK, LINK),
        disk=disk,
        block_size=4,
        block_bytes=BLOCK_BYTES,
        copies_per_block=copies_per_block,
        max_concurrent_loads=8,
    )


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


# ---- the tier ------------------------------------------------------------------------------


def test_eviction_is_lru_over_ready_unpinned_blocks():
    tier = OffloadTier("cpu", num_blocks=4, block_bytes=1)
    assert tier.prepare_store(["a", "b", "c", "d"], ready_s=1.0, now=0.0) == (["a", "b", "c", "d"], [])
    # Nothing is ready before t=1: a fifth block cannot evict anyone yet, and nothing changes.
    assert tier.prepare_store(["e"], ready_s=2.0, now=0.5) is None and len(tier) == 4
    tier.touch(["a", "b"])  # a request's blocks: its first block ends up most recent: c d b a
    assert list(tier.blocks) == ["c", "d", "b", "a"]
    tier.prepare_load(["c"])  # c is being loaded: pinned
    stored, evicted = tier.prepare_store(["e", "f"], ready_s=3.0, now=1.0)
    assert stored == ["e", "f"] and evicted == ["d", "b"]  # LRU, skipping the pinned c
    assert list(tier.blocks) == ["c", "a", "e", "f"]
    tier.complete_load(["c"])
    # Blocks asked to be stored are never evicted for each other; stored ones are skipped.
    stored, evicted = tier.prepare_store(["a", "g"], ready_s=4.0, now=3.0)
    assert stored == ["g"] and evicted == ["c"]
    assert tier.counters.evicted_blocks == 3 and tier.counters.stored_blocks == 7
    tier.check_invariants()


def test_arc_promotes_blocks_touched_again_and_adapts_to_ghost_hits():
    tier = OffloadTier("cpu", num_blocks=4, block_bytes=1, policy="arc")
    tier.prepare_store(["a", "b", "c", "d"], ready_s=0.0, now=0.0)
    arc = tier.arc
    tier.touch(["a"], now=1.0)  # seen twice: T2
    assert list(arc.t1) == ["b", "c", "d"] and list(arc.t2) == ["a"]
    # T1 (3) is at least its target (0): evict from T1, least recent first, into ghost B1.
    stored, evicted = tier.prepare_store(["e", "f"], ready_s=2.0, now=1.0)
    assert evicted == ["b", "c"] and list(arc.b1) == ["b", "c"]
    assert list(arc.t1) == ["d", "e", "f"] and set(tier.blocks) == {"a", "d", "e", "f"}
    # A request asks for b again: a ghost hit in B1 raises T1's target by max(1, 0/2) = 1.
    tier.touch(["b"], now=3.0)
    assert arc.target_t1_size == 1.0
    # e and f are not ready before t=2: touching them at t=1.5 keeps them in T1.
    tier.touch(["e"], now=1.5)
    assert "e" in arc.t1 and "e" not in arc.t2
    # T1 (3) >= target (1): its least recent go, d then f (e was moved to its recent end); a, in
    # T2, stays.
    stored, evicted = tier.prepare_store(["b", "g"], ready_s=4.0, now=3.0)
    assert evicted == ["d", "f"] and "b" in arc.t1 and "b" not in arc.b1
    tier.check_invariants()


def test_lookup_counts_the_leading_ready_blocks():
    tier = OffloadTier("cpu", num_blocks=8, block_bytes=1)
    tier.prepare_store([1, 2], ready_s=1.0, now=0.0)
    tier.prepare_store([3], ready_s=2.0, now=0.0)
    assert tier.lookup([1, 2, 3, 4], now=0.9) == 0
    assert tier.lookup([1, 2, 3, 4], now=1.0) == 2
    assert tier.lookup([1, 2, 3, 4], now=2.0) == 3
    assert tier.lookup([2, 1], now=5.0) == 2 and tier.lookup([4, 1], now=5.0) == 0


# ---- the link --------------------------------------------------------------------------------


def test_a_copy_job_costs_latency_plus_copies_plus_bytes_and_jobs_queue_in_order():
    q = CopyQueue(LINK)
    # 3 blocks, one memcpy each: 10 ms + 3 x 1 ms + 30 kB / 1 MB/s = 43 ms
    assert q.submit(0.0, 3, 3 * BLOCK_BYTES) == pytest.approx(0.043)
    # Submitted at 20 ms, it waits for the first: 43 ms + 10 + 1 + 10 = 64 ms
    assert q.submit(0.020, 1, BLOCK_BYTES) == pytest.approx(0.064)
    # The queue is idle again at 100 ms: starts at once.
    assert q.submit(0.100, 1, BLOCK_BYTES) == pytest.approx(0.121)
    assert q.busy_s == pytest.approx(0.043 + 0.021 + 0.021) and q.bytes_moved == 5 * BLOCK_BYTES


def test_the_per_layer_layout_pays_one_memcpy_per_layer_k_and_v():
    # 64 copies per block (32 layers x K, V): 10 ms + 2 x 64 x 1 ms + 20 ms
    assert LINK.job_time_s(2 * 64, 2 * BLOCK_BYTES) == pytest.approx(0.010 + 0.128 + 0.020)


# ---- a host hit, through the scheduler ------------------------------------------------------


def _run_step(s, conn, clock, index):
    clock.t = float(index)  # one step per simulated second
    log = step(s, index)
    clock.t = index + 1.0  # the step is applied at the end of its second
    s.update_from_kv_xfer_finished(*conn.get_finished())
    return log


def test_a_host_hit_is_loaded_at_the_link_price_and_the_request_computes_only_the_rest():
    clock = Clock()
    conn = OffloadingConnector(spec(), clock)
    s = make_scheduler(enable_caching=True, connector=conn)
    kv = s.kv_cache_manager
    a = req(0, prompt=13, output=1, hashes=(1, 2, 3))
    s.add_request(a)
    # Step 0: A's 13 tokens; its 3 full blocks are stored on the host: done at 43 ms.
    log = _run_step(s, conn, clock, 0)
    assert log.scheduled == {0: 13} and log.finished == [0]
    assert [conn.cpu.blocks[k] for k in (1, 2, 3)] == [pytest.approx(0.043)] * 3
    # A finished at t=0 with its store in flight: its blocks were held, then freed at t=1.
    assert not s.sending and kv.num_used_blocks == 0
    # B (33 tokens, 9 blocks) takes the whole HBM cache: A's cached blocks are evicted.
    b = req(1, prompt=33, output=1, hashes=tuple(range(10, 18)))
    s.add_request(b)
    assert _run_step(s, conn, clock, 1).scheduled == {1: 33}
    assert kv.block_pool.get_cached_block(1) is None
    # C shares A's 3 blocks: HBM misses them, the host has them. Step 2 allocates its blocks
    # and starts the load at t=2: 10 ms + 3 x 1 ms + 30 ms = 43 ms. C runs nothing meanwhile.
    c = req(2, prompt=14, output=1, hashes=(1, 2, 3))
    s.add_request(c)
    log = _run_step(s, conn, clock, 2)
    assert log.scheduled == {} and c.status == RequestStatus.WAITING_FOR_REMOTE_KVS
    assert conn.h2d.free_at_s == pytest.approx(2.043)
    assert conn.cpu.counters.hit_blocks == 3 and conn.cpu.counters.bytes_loaded == 30_000
    # Landed by t=3: step 3 computes the last 2 prompt tokens after the 12 loaded.
    log = _run_step(s, conn, clock, 3)
    assert log.scheduled == {2: 2}
    assert c.num_cached_tokens == 12 and c.num_external_computed_tokens == 12
    assert conn.stats.num_loads == 1 and conn.stats.load_time_s == pytest.approx(0.043)
    conn.check_invariants()


def test_a_load_keeps_the_request_waiting_until_it_lands(tmp_path):
    """With the SimPy engine loop: C's first step starts when its load lands, 43 ms after
    it was scheduled, and its first token follows one GPU step later."""
    env = simpy.Environment()
    recorder = Recorder(tmp_path, write_steps=False, timeline_interval_s=0)
    conn = OffloadingConnector(spec(), lambda: env.now)
    s = make_scheduler(num_gpu_blocks=10, enable_caching=True, connector=conn)
    replica = Replica(0, env, s, FixedCost(), recorder, EngineClock(COSTS, 512))
    conn.wake_at = lambda at_s: env.timeout(at_s - env.now).callbacks.append(lambda _: replica.wake())
    a = req(0, prompt=13, output=1, hashes=(1, 2, 3))
    b = req(1, prompt=33, output=1, hashes=tuple(range(10, 18)), arrival=1.0)
    c = req(2, prompt=14, output=1, hashes=(1, 2, 3), arrival=2.0)
    replica.add_request(a)
    for r in (b, c):
        env.timeout(r.arrival_s).callbacks.append(lambda _, r=r: replica.add_request(r))
    env.run()
    recorder.close()
    assert all(r.status == RequestStatus.FINISHED for r in (a, b, c))
    assert c.num_cached_tokens == 12
    assert c.first_scheduled_s == pytest.approx(2.043)
    assert c.first_token_s == pytest.approx(2.043 + GPU_S)
    assert s.kv_cache_manager.num_used_blocks == 0
    conn.check_invariants()


def test_a_second_request_for_blocks_being_loaded_waits_then_hits_hbm():
    clock = Clock()
    conn = OffloadingConnector(spec(), clock)
    s = make_scheduler(num_gpu_blocks=20, enable_caching=True, connector=conn)
    conn.cpu.prepare_store([1, 2], ready_s=0.0, now=0.0)
    c, d = req(0, prompt=9, output=1, hashes=(1, 2)), req(1, prompt=9, output=1, hashes=(1, 2))
    s.add_request(c)
    s.add_request(d)
    clock.t = 0.0
    log = step(s, 0)
    # C loads the two blocks; D is passed over (its hits are being loaded), keeping its place.
    assert log.scheduled == {} and conn.stats.num_delayed == 1
    assert conn.cpu.counters.hit_blocks == 2
    clock.t = 1.0
    s.update_from_kv_xfer_finished(*conn.get_finished())
    clock.t = 1.0
    log = step(s, 1)
    # C resumes; D finds both blocks in HBM now (published when C's load landed).
    assert log.scheduled == {0: 1, 1: 1} and d.num_cached_tokens == 8
    assert d.num_external_computed_tokens == 0 and conn.cpu.counters.hit_blocks == 2


def test_host_evictions_go_down_to_disk_and_a_disk_hit_is_read_back_through_the_host():
    clock = Clock()
    conn = OffloadingConnector(spec(cpu_blocks=2, disk_blocks=8), clock)
    s = make_scheduler(num_gpu_blocks=10, enable_caching=True, connector=conn)
    a = req(0, prompt=9, output=1, hashes=(1, 2))
    b = req(1, prompt=9, output=1, hashes=(3, 4))
    for index, r in enumerate((a, b)):
        s.add_request(r)
        _run_step(s, conn, clock, index)
    # The host holds 2 blocks: B's stores evicted A's, which went to disk.
    assert set(conn.cpu.blocks) == {3, 4} and set(conn.disk.blocks) == {1, 2}
    assert conn.cpu.counters.evicted_blocks == 2 and conn.disk.counters.stored_blocks == 2
    # Fill HBM so A's blocks leave it, then C asks for them: read from disk (20 kB at
    # 100 kB/s + 1 ms = 201 ms), then copied to the GPU (10 + 2 x 1 + 20 ms = 32 ms).
    filler = req(2, prompt=36, output=1)
    s.add_request(filler)
    _run_step(s, conn, clock, 2)
    assert s.kv_cache_manager.block_pool.get_cached_block(1) is None
    c = req(3, prompt=9, output=1, hashes=(1, 2))
    s.add_request(c)
    clock.t = 3.0
    step(s, 3)
    assert conn.disk.counters.hit_blocks == 2 and conn.cpu.counters.hit_blocks == 0
    assert conn.h2d.free_at_s == pytest.approx(3.0 + 0.201 + 0.032)
    conn.check_invariants()


def test_an_offload_run_is_byte_identical_per_seed_and_beats_hbm_only(tmp_path):
    from conftest import compose_config
    from sim.config.build import build_run_spec, resolved_config
    from sim.run import simulate

    overrides = [
        "+scenario=chat_sessions_llama70b_h100", "workload.num_requests=120",
        "scheduler.num_gpu_blocks_override=1200", "scheduler.max_model_len=12000",
        "output.print_summary=false", "output.progress=false",
    ]  # fmt: skip
    results = {}
    for name, extra in (("a", ["kv_offload=cpu"]), ("b", ["kv_offload=cpu"]), ("none", [])):
        cfg = compose_config(overrides + extra)
        results[name] = simulate(build_run_spec(cfg), tmp_path / name, resolved_config(cfg))
    for table in ("requests.parquet", "steps.parquet"):
        assert (tmp_path / "a" / table).read_bytes() == (tmp_path / "b" / table).read_bytes()
    with_tier, hbm_only = results["a"].summary, results["none"].summary
    assert with_tier["kv_offload"]["loads"] > 0 and "kv_offload" not in hbm_only
    assert with_tier["kv_cache"]["prefix_cache_hit_rate"] > hbm_only["kv_cache"]["prefix_cache_hit_rate"]
    assert with_tier["latency_s"]["ttft"]["mean"] < hbm_only["latency_s"]["ttft"]["mean"]
