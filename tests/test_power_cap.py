"""The power cap: compute-bound steps slow with the clock the limit allows, HBM-bound ones do not,
and a profile calibrated at the limit is not slowed twice."""

from __future__ import annotations

import pytest

from sim.cost.batch import BatchSummary
from sim.cost.breakdown import OP_CLASSES, ZERO_OP, OpCost, StepCost
from sim.cost.power_cap import ClockModel, PowerCappedCostModel
from sim.economics import PowerModel
from sim.errors import ConfigError
from sim.step import StepShape, build_step_cost_model

H200 = PowerModel(idle_w=138.0, tdp_w=700.0, peak_flops=989.4e12, memory_bandwidth=4.8e12)
BOOST = 1980.0
MLP = OP_CLASSES.index("mlp")
DECODE = OP_CLASSES.index("attention_decode")


def step(op_index: int, op: OpCost, overhead_s: float = 0.002) -> StepCost:
    ops = [ZERO_OP] * len(OP_CLASSES)
    ops[op_index] = op
    return StepCost(tuple(ops), op.time_s, overhead_s)


class Fixed:
    """A cost model that prices every batch the same, counting its calls."""

    def __init__(self, cost: StepCost) -> None:
        self.cost, self.calls = cost, 0

    def step_cost(self, batch: BatchSummary) -> StepCost:
        self.calls += 1
        return self.cost

    def provenance(self) -> dict[str, str]:
        return {}

    def assumptions(self) -> dict[str, object]:
        return {}


# 0.1 s of GEMM at 90% of the bf16 peak at boost; 0.1 s of decode at 95% of the HBM bandwidth
PREFILL = step(MLP, OpCost(time_s=0.1, flops=0.9 * 989.4e12 * 0.1, bytes=0.02 * 4.8e12 * 0.1, compute_s=0.1, memory_s=0.002))
DECODE_STEP = step(DECODE, OpCost(time_s=0.1, flops=1e12, bytes=0.95 * 4.8e12 * 0.1, compute_s=0.001, memory_s=0.1))
BATCH = BatchSummary(num_prefill_tokens=8192, num_prefill_seqs=1)


def boost_referred(cost: StepCost, limit_w: float = 700.0) -> PowerCappedCostModel:
    return PowerCappedCostModel(Fixed(cost), ClockModel(H200), BOOST, limit_w, reference_clock_mhz=BOOST)


def test_a_compute_bound_step_at_the_cap_slows_by_boost_over_clock():
    capped = boost_referred(PREFILL).capped(BATCH)
    uncapped_w = ClockModel(H200).power_w(PREFILL.flops, PREFILL.bytes, 0.1, 0.002, 1.0, 1.0)
    assert uncapped_w > 900  # 138 + 0.9 x 1.69 x 562 + ...: far over the 700 W limit
    assert 1000 < capped.clock_mhz < 1900
    assert capped.cost.gpu_time_s == pytest.approx(0.1 * BOOST / capped.clock_mhz, rel=1e-9)
    assert capped.cost.overhead_s == PREFILL.overhead_s
    assert capped.power_w == pytest.approx(700.0)
    # the clock found is the root: the step's power at it is the limit
    x = capped.clock_mhz / BOOST
    assert ClockModel(H200).power_w(PREFILL.flops, PREFILL.bytes, 0.1, 0.002, 1.0, x) == pytest.approx(700.0, rel=1e-6)


def test_a_memory_bound_step_keeps_its_time_at_the_cap():
    model = boost_referred(DECODE_STEP)
    capped = model.capped(BATCH)
    assert capped.cost == DECODE_STEP  # HBM time does not follow the SM clock
    assert capped.power_w <= 700.0
    lower = boost_referred(DECODE_STEP, limit_w=400.0).capped(BATCH)
    assert lower.cost == DECODE_STEP and lower.clock_mhz < capped.clock_mhz


def test_a_step_under_the_limit_runs_at_boost_unchanged():
    light = step(MLP, OpCost(time_s=0.1, flops=0.1 * 989.4e12 * 0.1, bytes=1e9, compute_s=0.1, memory_s=0.001))
    capped = boost_referred(light).capped(BATCH)
    assert capped.clock_mhz == BOOST and capped.cost == light
    assert capped.power_w == pytest.approx(H200.power_w(light.flops, light.bytes, light.time_s))


def test_each_batch_is_priced_once():
    inner = Fixed(PREFILL)
    model = PowerCappedCostModel(inner, ClockModel(H200), BOOST, 700.0, reference_clock_mhz=BOOST)
    first = model.step_cost(BATCH)
    assert model.step_cost(BATCH) is first and inner.calls == 1
    model.step_cost(BatchSummary(num_decode_seqs=1, decode_context_tokens=10))
    assert inner.calls == 2


@pytest.fixture(scope="module")
def h200_profile():
    return build_step_cost_model(["model=llama3_8b", "hardware=h200"])


def test_the_calibrated_profile_is_not_slowed_twice_at_its_own_limit(h200_profile):
    hw = h200_profile.hardware
    model = PowerCappedCostModel.from_specs(h200_profile, hw, hw.peak_flops["bf16"])
    assert model.reference_limit_w == hw.tdp_w == model.limit_w
    for shape in (StepShape("prefill", 1, 8192), StepShape("decode", 256, 4096), StepShape("decode", 1, 1024)):
        batch = shape.batch_summary()
        assert model.step_cost(batch) == h200_profile.step_cost(batch)
    prefill = model.capped(StepShape("prefill", 1, 8192).batch_summary())
    assert 1300 < prefill.clock_mhz < 1700  # vLLM's off_4k_64 held 1465 MHz, the calibration 1560
    assert model.capped(StepShape("decode", 1, 1024).batch_summary()).clock_mhz == BOOST


def test_a_lower_power_limit_slows_prefill_and_not_small_decode(h200_profile):
    hw = h200_profile.hardware
    model = PowerCappedCostModel.from_specs(h200_profile, hw, hw.peak_flops["bf16"], limit_w=500.0)
    prefill = StepShape("prefill", 1, 8192).batch_summary()
    decode = StepShape("decode", 1, 1024).batch_summary()
    assert model.step_cost(prefill).time_s > 1.15 * h200_profile.step_cost(prefill).time_s
    assert model.step_cost(decode) == h200_profile.step_cost(decode)
    assert "500 W" in model.assumptions()["power_cap"]


def test_flat_factors_are_referred_to_the_sustained_clock():
    flat = build_step_cost_model(["model=llama3_8b", "hardware=h200", "cost.efficiency=flat"])
    model = PowerCappedCostModel.from_specs(flat, flat.hardware, flat.hardware.peak_flops["bf16"])
    assert model.reference_limit_w is None and model.reference_clock_mhz == BOOST
    prefill = StepShape("prefill", 1, 8192).batch_summary()
    assert model.step_cost(prefill).time_s > 1.05 * flat.step_cost(prefill).time_s
    assert model.hardware is flat.hardware  # the inner model's attributes show through


def test_a_limit_at_or_below_idle_is_refused():
    with pytest.raises(ConfigError, match="must exceed the idle power"):
        PowerCappedCostModel(Fixed(PREFILL), ClockModel(H200), BOOST, 100.0, reference_clock_mhz=BOOST)
    with pytest.raises(ConfigError, match="exactly one"):
        PowerCappedCostModel(Fixed(PREFILL), ClockModel(H200), BOOST, 700.0)
