"""Hand-timed engine loops: async scheduling (vLLM's batch queue of two) and the serial loop.

Every step's kernels take 10 ms, every launch 1 ms, everything else nothing, so each time
below is worked out by hand from sim.core.engine_clock's rules."""

from __future__ import annotations

import pytest
import simpy

from engine_driver import make_scheduler, req
from sim.core.engine_clock import EngineClock
from sim.cost.breakdown import OP_CLASSES, ZERO_OP, StepCost
from sim.cost.engine_costs import EngineCosts
from sim.metrics.recorder import Recorder
from sim.simulation import Replica

GPU_S = 0.010
LAUNCH_S = 0.001


class FixedCost:
    def step_cost(self, batch) -> StepCost:
        return StepCost(ops=(ZERO_OP,) * len(OP_CLASSES), gpu_time_s=GPU_S, overhead_s=0.0)


COSTS = EngineCosts(
    schedule_s=0.0, schedule_per_req_s=0.0, launch_full_s=LAUNCH_S, launch_piecewise_s=LAUNCH_S,
    launch_eager_s=LAUNCH_S, launch_full_per_req_s=0.0, launch_piecewise_per_req_s=0.0,
    launch_eager_per_req_s=0.0, update_s=0.0, update_per_req_s=0.0,
    gpu_step_s=0.0, gpu_per_decode_s=0.0, input_s=0.0, output_s=0.0, output_per_req_s=0.0,
)  # fmt: skip


def run(tmp_path, requests, async_scheduling=True, num_gpu_blocks=64):
    env = simpy.Environment()
    recorder = Recorder(tmp_path, write_steps=False, timeline_interval_s=0)
    scheduler = make_scheduler(num_gpu_blocks=num_gpu_blocks, block_size=4)
    replica = Replica(0, env, scheduler, FixedCost(), recorder, EngineClock(COSTS, 512),
                      async_scheduling=async_scheduling)  # fmt: skip
    for arrival_s, request in requests:
        env.timeout(arrival_s).callbacks.append(lambda _, r=request: replica.add_request(r))
    env.run()
    recorder.close()
    return replica


def test_async_schedules_ahead_and_a_late_arrival_waits_two_steps(tmp_path):
    a = req(0, prompt=4, output=3)
    b = req(1, prompt=4, output=2, arrival=0.015)
    run(tmp_path, [(0.0, a), (0.015, b)])
    # t=0: step 1 (A's prefill) launched by 1 ms, GPU 0-10 ms; nothing in flight, so the loop
    # schedules step 2 (A's decode, on the placeholder) at 1 ms: GPU 10-20 ms. Step 1 is
    # applied when its GPU work ends: A's first token at 10 ms.
    assert a.first_token_s == pytest.approx(0.010)
    # t=10 ms: step 3 (A's last token) scheduled, GPU 20-30; step 2 applied at 20 ms.
    # B arrives at 15 ms, during that iteration: it is first scheduled at 20 ms (step 4,
    # which skips A: its last token is in flight), GPU 30-40 ms, applied at 40 ms.
    assert b.first_scheduled_s == pytest.approx(0.020)
    assert a.finish_s == pytest.approx(0.030)
    assert b.first_token_s == pytest.approx(0.040)
    assert b.finish_s == pytest.approx(0.050)


def test_async_blocks_freed_by_a_step_are_free_one_step_later(tmp_path):
    # 3 usable blocks of 4 tokens. A (4 + 3 tokens) holds 2 blocks; B's 8-token prompt needs 2.
    a = req(0, prompt=4, output=3)
    b = req(1, prompt=8, output=2, arrival=0.015)
    run(tmp_path, [(0.0, a), (0.015, b)], num_gpu_blocks=4)
    # At 20 ms (step 4) A still holds its blocks: its last step is in flight until 30 ms, and
    # they are freed only when that step is applied. B is scheduled at 30 ms, GPU 30-40 ms.
    assert a.finish_s == pytest.approx(0.030)
    assert b.first_scheduled_s == pytest.approx(0.030)
    assert b.first_token_s == pytest.approx(0.040)


def test_serial_loop_puts_the_launch_in_series_with_the_gpu(tmp_path):
    a = req(0, prompt=4, output=3)
    run(tmp_path, [(0.0, a)], async_scheduling=False)
    # Each step: launch 0-1 ms, GPU from the end of schedule() (0) to 10 ms, then applied; the
    # next step is scheduled only then: tokens at 10, 20 and 30 ms (the GPU starts as the
    # launch begins, so the 1 ms launch hides under the 10 ms of kernels).
    assert a.first_token_s == pytest.approx(0.010)
    assert a.finish_s == pytest.approx(0.030)


def test_a_long_launch_delays_the_tokens_of_the_step_before(tmp_path):
    slow = EngineCosts(**{**COSTS.to_dict(), "launch_eager_s": 0.030})
    env = simpy.Environment()
    recorder = Recorder(tmp_path, write_steps=False, timeline_interval_s=0)
    scheduler = make_scheduler(num_gpu_blocks=64, block_size=4, max_num_batched_tokens=1024)
    clock = EngineClock(slow, capture_size=8)  # more than 8 tokens: eager
    replica = Replica(0, env, scheduler, FixedCost(), recorder, clock)
    a = req(0, prompt=4, output=4)
    b = req(1, prompt=40, output=2)
    replica.add_request(a)
    env.timeout(0.0015).callbacks.append(lambda _: replica.add_request(b))
    env.run()
    recorder.close()
    # Step 1 (A prefill, piecewise) launched by 1 ms, GPU 0-10. Step 2 (A decode, FULL) at
    # 1 ms, launched by 2 ms, GPU 10-20; step 1 applied at 10 ms. B was added at 1.5 ms, so
    # step 3 (A decode + B's 40-token prefill: eager, 30 ms launch) is scheduled at 10 ms and
    # launched by 40 ms; its GPU work, 20-30 ms, cannot end before its launch: 40 ms. Step 2's
    # token waits for that launch: A's second token comes at 40 ms, not 20.
    assert a.first_token_s == pytest.approx(0.010)
    gaps = recorder.token_times[0].itl_s.tolist()
    assert gaps[0] == pytest.approx(0.030)


def test_launches_beyond_a_full_graph_scale_with_the_layer_count():
    fitted = EngineCosts(**{**COSTS.to_dict(), "launch_full_s": 0.003, "launch_piecewise_s": 0.010,
                            "launch_eager_s": 0.030, "fitted_num_layers": 32})  # fmt: skip
    deeper = fitted.for_layers(80)
    # FULL graph: one replay, whatever the depth. PIECEWISE: 3 + 7 x 80/32 = 20.5 ms; eager:
    # 3 + 27 x 80/32 = 70.5 ms.
    assert deeper.launch_full_s == pytest.approx(0.003)
    assert deeper.launch_piecewise_s == pytest.approx(0.0205)
    assert deeper.launch_eager_s == pytest.approx(0.0705)
    assert "scaled from 32 to 80 layers" in deeper.source
    assert fitted.for_layers(32) is fitted and COSTS.for_layers(80) is COSTS  # unknown: as is


def test_launch_spread_keeps_the_median_and_comes_from_the_seeded_stream():
    import numpy as np

    spread = EngineCosts(**{**COSTS.to_dict(), "launch_eager_s": 0.030, "launch_log_sigma": 0.3})

    def launches(seed):
        clock = EngineClock(spread, capture_size=8, rng=np.random.default_rng(seed))
        return [clock.launch(i, 100, 2, 1, 0.0).launch_end_s - i for i in range(2001)]

    first = launches(7)
    assert first == launches(7)  # same seed, same launches
    assert float(np.median(first)) == pytest.approx(0.030, rel=0.03)
    assert np.std(np.log(first)) == pytest.approx(0.3, rel=0.1)
    full = EngineClock(spread, capture_size=512, rng=np.random.default_rng(7))
    assert {full.launch(0, 4, 4, 4, 0.0).launch_end_s for _ in range(3)} == {LAUNCH_S}  # FULL: no spread
