"""The scheduler's KV-connector path (sim.core.kv_connector), worked out by hand: block size 4,
ten KV blocks (nine usable)."""

from __future__ import annotations

import pytest
import simpy

from engine_driver import make_scheduler, req, step
from sim.core.engine_clock import EngineClock
from sim.core.request import RequestStatus
from sim.metrics.recorder import Recorder
from sim.simulation import Replica
from test_engine_timing import COSTS, GPU_S, LAUNCH_S, FixedCost


class TableConnector:
    """Supplies `supply[request_id] = (tokens, async)`, once per request as vLLM's connectors
    do; loads and sends finish when a test puts their ids in `finished_recving` or
    `finished_sending`."""

    def __init__(self, supply: dict[int, tuple[int, bool]], delay_free: bool = False) -> None:
        self.supply = supply
        self.delay_free = delay_free
        self.allocated: dict[int, tuple[int, int]] = {}  # request_id -> (blocks, external tokens)
        self.finished_sending: set[int] = set()
        self.finished_recving: set[int] = set()
        self.num_meta_calls = 0

    def get_num_new_matched_tokens(self, request, num_computed_tokens):
        return self.supply.pop(request.request_id, (0, False))

    def update_state_after_alloc(self, request, num_external_tokens):
        self.allocated[request.request_id] = (len(request.block_ids), num_external_tokens)

    def build_connector_meta(self, output):
        self.num_meta_calls += 1

    def request_finished(self, request):
        return self.delay_free

    def get_finished(self):
        done = self.finished_sending, self.finished_recving
        self.finished_sending, self.finished_recving = set(), set()
        return done


def test_an_async_load_holds_blocks_and_the_request_resumes_after_the_loaded_tokens():
    conn = TableConnector({0: (12, True)})
    s = make_scheduler(connector=conn)
    a = req(0, prompt=14, output=2)
    s.add_request(a)
    # Step 0: 12 tokens will load: 3 blocks allocated, nothing scheduled, A waits in the queue.
    log = step(s, 0)
    assert log.scheduled == {} and conn.allocated[0] == (3, 12)
    assert a.status == RequestStatus.WAITING_FOR_REMOTE_KVS and list(s.waiting) == [a]
    assert s.running == [] and s.kv_cache_manager.num_used_blocks == 3
    assert s.num_waiting_for_remote_kvs == 1
    # Step 1: not landed yet: still nothing.
    assert step(s, 1).scheduled == {}
    # The load lands; step 2 resumes A after 3 blocks = 12 tokens: its last 2 prompt tokens
    # (a 4th block), and it samples its first token.
    s.update_from_kv_xfer_finished(set(), {0})
    log = step(s, 2)
    assert log.scheduled == {0: 2} and log.blocks_used == 4
    assert a.num_computed_tokens == 14 and a.num_output_tokens == 1
    assert a.num_external_computed_tokens == 12 and a.num_cached_tokens == 12
    assert s.num_waiting_for_remote_kvs == 0 and conn.num_meta_calls == 3


def test_a_fully_loaded_prompt_recomputes_its_last_token_as_a_decode():
    # P/D's decode side: the whole 8-token prompt comes from the prefill instance.
    conn = TableConnector({0: (8, True)})
    s = make_scheduler(connector=conn)
    a = req(0, prompt=8, output=3)
    s.add_request(a)
    step(s, 0)
    s.update_from_kv_xfer_finished(set(), {0})
    log = step(s, 1)
    # 2 blocks hold all 8 tokens; the 8th is computed again for its logits: one token after
    # 7 in the cache, priced as a decode.
    assert log.scheduled == {0: 1}
    assert log.output.batch.num_decode_seqs == 1 and log.output.batch.decode_context_tokens == 7
    assert a.num_output_tokens == 1 and s.kv_cache_manager.num_used_blocks == 2


def test_a_request_waiting_for_its_load_is_passed_over_and_keeps_its_place():
    conn = TableConnector({0: (8, True)})
    s = make_scheduler(connector=conn)
    a, b, c = req(0, prompt=9, output=1), req(1, prompt=4, output=1), req(2, prompt=4, output=1)
    for r in (a, b, c):
        s.add_request(r)
    log = step(s, 0)
    # B and C run while A loads; A takes no max_num_seqs slot and no token budget.
    assert log.scheduled == {1: 4, 2: 4} and list(s.waiting) == [a]
    s.update_from_kv_xfer_finished(set(), {0})
    assert step(s, 1).scheduled == {0: 1}


def test_a_synchronous_load_is_scheduled_at_once_past_the_external_tokens():
    conn = TableConnector({0: (8, False)})
    s = make_scheduler(connector=conn)
    a = req(0, prompt=10, output=1)
    s.add_request(a)
    log = step(s, 0)
    assert log.scheduled == {0: 2} and a.num_cached_tokens == 8 and log.blocks_used == 3


def test_a_finished_request_keeps_its_blocks_until_the_send_is_reported():
    conn = TableConnector({}, delay_free=True)
    s = make_scheduler(connector=conn)
    a = req(0, prompt=8, output=1)
    s.add_request(a)
    log = step(s, 0)
    assert log.finished == [0] and s.kv_cache_manager.num_used_blocks == 2 and 0 in s.sending
    s.update_from_kv_xfer_finished({0}, set())
    assert s.kv_cache_manager.num_used_blocks == 0 and not s.sending


def test_the_engine_idles_until_the_load_lands_and_the_connector_wakes_it(tmp_path):
    env = simpy.Environment()
    recorder = Recorder(tmp_path, write_steps=False, timeline_interval_s=0)
    conn = TableConnector({0: (8, True)})
    scheduler = make_scheduler(num_gpu_blocks=64, connector=conn)
    replica = Replica(0, env, scheduler, FixedCost(), recorder, EngineClock(COSTS, 512))

    def land(_):
        conn.finished_recving.add(0)
        replica.wake()

    a = req(0, prompt=8, output=2)
    replica.add_request(a)
    env.timeout(0.050).callbacks.append(land)
    env.run()
    recorder.close()
    # t=0: A's blocks allocated, nothing to run: the loop idles. At 50 ms the load lands: the
    # last prompt token is recomputed (launch by 51 ms, GPU 50-60 ms) and samples the first
    # token at 60 ms; async scheduling runs the second step on the placeholder, GPU 60-70 ms.
    assert a.first_scheduled_s == pytest.approx(0.050)
    assert a.first_token_s == pytest.approx(0.050 + GPU_S)
    assert a.finish_s == pytest.approx(0.050 + 2 * GPU_S)
    assert LAUNCH_S < GPU_S and a.status == RequestStatus.FINISHED
    assert scheduler.kv_cache_manager.num_used_blocks == 0


@pytest.mark.parametrize("seed", range(20))
def test_random_loads_and_sends_conserve_blocks_and_finish_every_request(seed):
    import random

    rng = random.Random(seed)
    requests = [req(i, prompt=rng.randint(1, 40), output=rng.randint(1, 8)) for i in range(12)]
    supply = {}
    for r in requests:
        if rng.random() < 0.6:
            supply[r.request_id] = (rng.randint(1, r.num_prompt_tokens), rng.random() < 0.7)
    conn = TableConnector(supply, delay_free=rng.random() < 0.5)
    s = make_scheduler(num_gpu_blocks=40, max_num_batched_tokens=32, max_num_seqs=4,
                       enable_caching=bool(seed % 2), connector=conn)  # fmt: skip
    for r in requests:
        s.add_request(r)
    pool = s.kv_cache_manager.block_pool
    for index in range(400):
        log = step(s, index)
        # Loads land and sends finish after a random number of steps.
        for r in requests:
            if r.status == RequestStatus.WAITING_FOR_REMOTE_KVS and rng.random() < 0.3:
                conn.finished_recving.add(r.request_id)
        conn.finished_sending |= {i for i in s.sending if rng.random() < 0.5}
        s.update_from_kv_xfer_finished(*conn.get_finished())
        held = sum(len(r.block_ids) for r in requests)
        assert pool.num_used_blocks <= held and held <= pool.num_usable_blocks
        assert len(s.running) <= 4 and sum(log.scheduled.values()) <= 32
        if not s.has_unfinished_requests() and not s.sending:
            break
    assert all(r.status == RequestStatus.FINISHED for r in requests)
    assert all(r.num_output_tokens == r.max_tokens for r in requests)
    assert pool.num_used_blocks == 0 and pool.num_acquired_total == pool.num_released_total
