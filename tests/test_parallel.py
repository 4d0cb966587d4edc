"""Pipeline, expert and data parallelism, TP across nodes, MLA: hand-built cases.

A 2-stage pipeline step timed by hand; one EP dispatch/combine and one cross-node all-reduce
priced by hand; the PP scheduler's once-every-pp-steps rule; per-stage and per-EP-rank
memory by hand; the refusals of layouts that cannot work.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from sim.catalog import (
    hardware_spec_from_config,
    load_catalog_entry,
    model_spec_from_config,
    precision_spec_from_config,
)
from sim.core.engine_clock import ParallelEngineClock
from sim.core.kv_cache_manager import KVCacheManager
from sim.core.pipeline_scheduler import PipelineScheduler
from sim.core.request import Request
from sim.core.scheduler import SchedulerConfig
from sim.cost.batch import BatchSummary
from sim.cost.comm import Links, allreduce_s, dispatch_combine_s, stage_send_s
from sim.cost.efficiency import FlatEfficiency
from sim.cost.engine_costs import EngineCosts
from sim.cost.roofline import RooflineCostModel
from sim.cost.staged import StagedCostModel
from sim.errors import ConfigError, DoesNotFitError
from sim.memory import plan_memory
from sim.memory_layout import stage_kv_bytes_per_token, stage_weight_bytes
from sim.parallel import ParallelSpec, build_parallel_spec, pp_layer_counts

GB = 1e9


def model(name):
    return model_spec_from_config(load_catalog_entry("model", name))


def hardware(name):
    return hardware_spec_from_config(load_catalog_entry("hardware", name))


def precision(name, hw="h100_sxm"):
    return precision_spec_from_config(load_catalog_entry("precision", name), hardware(hw))


def flat(hw):
    return FlatEfficiency(
        peak_flops=hw.peak_flops, vector_flops=hw.vector_flops, memory_bandwidth=hw.memory_bandwidth,
        gemm_efficiency=0.7, attention_efficiency=0.6, memory_efficiency=0.8,
        elementwise_efficiency=0.5, allreduce_efficiency=0.7,
        interconnect_bandwidth=hw.interconnect_bandwidth, interconnect_latency_s=hw.interconnect_latency_s,
    )  # fmt: skip


NO_CPU = dataclasses.replace(
    EngineCosts.assumed(), schedule_s=0.0, launch_full_s=0.0, launch_piecewise_s=0.0,
    launch_eager_s=0.0, update_s=0.0,
)  # fmt: skip


# ---- the pipeline -----------------------------------------------------------------------


def test_vllm_splits_layers_evenly_the_remainder_before_the_last_stage():
    assert pp_layer_counts(126, 2) == (63, 63)
    assert pp_layer_counts(61, 2) == (31, 30)
    assert pp_layer_counts(10, 4) == (2, 3, 3, 2)
    assert sum(pp_layer_counts(61, 8)) == 61


def test_a_two_stage_pipeline_step_timed_by_hand():
    """Two steps of stages (3 ms, 2 ms), launched at t=0 without CPU cost: step 1 starts
    stage 0 when step 0 leaves it (3 ms) and stage 1 when both it and stage 1 are free."""
    clock = ParallelEngineClock(NO_CPU, capture_size=512, pp=2)
    a = clock.launch(0.0, 8, 8, 8, kernel_time_s=2.5e-3, stage_times_s=(3e-3, 2e-3))
    b = clock.launch(0.0, 8, 8, 8, kernel_time_s=2.5e-3, stage_times_s=(3e-3, 2e-3))
    assert (a.gpu_start_s, a.gpu_end_s) == (0.0, pytest.approx(5e-3))
    assert (b.gpu_start_s, b.gpu_end_s) == (pytest.approx(3e-3), pytest.approx(8e-3))  # 3 + 3 + 2
    assert a.gpu_time_s == pytest.approx(2.5e-3)  # one GPU's mean busy time: (3 + 2) / 2


def test_a_step_that_needs_the_last_tokens_waits_for_the_last_stage():
    """The same two steps, the second decoding what the first sampled: its stage 0 starts
    only when the first leaves stage 1 (the token travels back): 5 + 3 + 2 = 10 ms."""
    sched = PipelineScheduler(SchedulerConfig(64, 8, 256), KVCacheManager(64, 16, 256, False), pp=2)
    clock = ParallelEngineClock(NO_CPU, capture_size=512, pp=2, scheduler=sched)
    sched.current_step, sched.dependency_step = 1, -1
    clock.launch(0.0, 8, 8, 8, 2.5e-3, (3e-3, 2e-3))
    sched.current_step, sched.dependency_step = 2, 0
    b = clock.launch(0.0, 8, 8, 8, 2.5e-3, (3e-3, 2e-3))
    assert (b.gpu_start_s, b.gpu_end_s) == (pytest.approx(5e-3), pytest.approx(10e-3))


def test_a_power_cap_stretch_scales_every_stage():
    clock = ParallelEngineClock(NO_CPU, capture_size=512, pp=2)
    step = clock.launch(0.0, 8, 8, 8, kernel_time_s=5e-3, stage_times_s=(3e-3, 2e-3))  # 2x
    assert step.gpu_end_s == pytest.approx(10e-3)


def _decoding(n, sched):
    """n requests past their prompt, running, one token scheduled per step."""
    for i in range(n):
        r = Request(request_id=i, arrival_s=0.0, num_prompt_tokens=4, max_tokens=100)
        sched.add_request(r)
    return sched


def test_under_pp2_a_request_samples_once_every_two_steps():
    """vLLM's next_decode_eligible_step = current_step + pp: after the prefill step the
    requests sit out one step (an empty step: the bubble), then decode every other step."""
    sched = _decoding(3, PipelineScheduler(SchedulerConfig(64, 8, 256), KVCacheManager(64, 4, 256, False), pp=2))
    sizes = []
    for _ in range(5):
        out = sched.schedule(0.0)
        sizes.append(len(out.decodes) + len(out.others))
    assert sizes == [3, 0, 3, 0, 3]
    assert len(sched.running) == 3  # held requests went back to running


def test_held_requests_keep_their_seats():
    """A request sitting out a step still counts against max_num_seqs."""
    sched = _decoding(2, PipelineScheduler(SchedulerConfig(64, 2, 256), KVCacheManager(64, 4, 256, False), pp=2))
    sched.schedule(0.0)
    sched.add_request(Request(request_id=9, arrival_s=0.0, num_prompt_tokens=4, max_tokens=4))
    out = sched.schedule(0.0)
    assert not out.others and len(sched.running) == 2 and len(sched.waiting) == 1


def test_stages_of_the_staged_model_add_up_to_the_plain_model():
    """Llama-3.1-8B on one GPU at PP1 against PP2: the stages hold the same layers, so
    their times add up to the plain model's step plus the one send between them, and stage
    0 differs from stage 1 by the embedding less the LM head."""
    llama, h100, bf16 = model("llama3_8b"), hardware("h100_sxm"), precision("bf16")
    eff = flat(h100)
    plain = RooflineCostModel(llama, h100, bf16, 1, eff, 0.0)
    staged = StagedCostModel(llama, h100, bf16, ParallelSpec(pp=2), eff, 0.0)
    batch = BatchSummary(num_decode_seqs=16, decode_context_tokens=16 * 1000)
    one, two = plain.step_cost(batch), staged.step_cost(batch)
    send = stage_send_s(eff, Links.of(h100), 16, 4096, 1, crosses_nodes=False)
    assert send == pytest.approx(h100.interconnect_latency_s + 2 * 16 * 4096 * 2 / h100.interconnect_bandwidth)
    s0, s1 = two.stage_times_s
    assert s0 + s1 == pytest.approx(one.gpu_time_s + send, rel=1e-9)
    embed = eff.elementwise(5.0 * 16 * 4096, 6 * 16 * 4096 * 2.0, 16).time_s
    head = one.ops[5].time_s
    assert s0 - s1 == pytest.approx(send + embed - head, rel=1e-9)
    assert two.gpu_time_s == pytest.approx((s0 + s1) / 2)


# ---- communication by hand --------------------------------------------------------------


def test_one_ep8_dispatch_and_combine_priced_by_hand():
    """512 tokens x 7168 x 2 bytes all-gathered then reduce-scattered over 8 GPUs of one
    H200 node (flat model: a ring of 450 GB/s x 0.7, 6 us per all-reduce): each is half a
    ring all-reduce of the gathered tokens."""
    h200 = hardware("h200")
    size = 512 * 7168 * 2
    ring = 6e-6 + 2 * 7 / 8 * size / (450e9 * 0.7)
    dispatch, combine = dispatch_combine_s(flat(h200), Links.of(h200), 512, 7168, 8)
    assert dispatch == combine == pytest.approx(ring / 2)


def test_an_ep16_all_to_all_across_two_nodes_priced_by_hand():
    """Over 2 nodes: the node's all-reduce, plus each GPU's 1/8 shard around a ring of 2
    nodes on its share of 8 x 50 GB/s NICs, 5 us a hop; dispatch is half of it."""
    h200 = hardware("h200")
    size = 512 * 7168 * 2
    node = 6e-6 + 2 * 7 / 8 * size / (450e9 * 0.7)
    inter = 2 * 1 * 5e-6 + 2 * 1 / 2 * (size / 8) / 50e9
    dispatch, combine = dispatch_combine_s(flat(h200), Links.of(h200), 512, 7168, 16)
    assert dispatch == pytest.approx((node + inter) / 2)
    assert allreduce_s(flat(h200), Links.of(h200), size, 16) == pytest.approx(node + inter)


def test_a_larger_group_never_communicates_faster():
    h100 = hardware("h100_sxm")
    eff, links = flat(h100), Links.of(h100)
    for size in (1e3, 1e6, 1e8):
        times = [allreduce_s(eff, links, size, n) for n in (2, 4, 8, 16, 32)]
        assert times == sorted(times)


# ---- memory by hand ---------------------------------------------------------------------


def test_llama_405b_in_bf16_is_refused_on_one_node_and_fits_on_two():
    llama, h100, bf16 = model("llama3_405b"), hardware("h100_sxm"), precision("bf16")
    knobs = dict(block_size=16, gpu_memory_utilization=0.9, max_num_batched_tokens=8192,
                 max_num_seqs=1024, max_model_len=8192)  # fmt: skip
    with pytest.raises(DoesNotFitError, match="parallel.pp=2"):
        plan_memory(llama, h100, bf16, 8, **knobs)
    pp2 = plan_memory(llama, h100, bf16, 8, parallel=ParallelSpec(tp=8, pp=2), **knobs)
    tp16 = plan_memory(llama, h100, bf16, 16, parallel=ParallelSpec(tp=16), **knobs)
    per_layer = llama.params_per_layer
    shard = math.ceil(llama.vocab_size / 8) * llama.hidden_size
    # by hand: 63 layers split 8 ways, plus the embedding (stage 0) or LM head + norm (stage 1)
    s0 = 63 * ((per_layer - 2 * llama.hidden_size) / 8 + 2 * llama.hidden_size) * 2 + shard * 2
    assert stage_weight_bytes(llama, bf16, ParallelSpec(tp=8, pp=2), 0) == pytest.approx(s0, rel=1e-6)
    # the last stage binds: the same weights (LM head for embedding, plus the final norm) and
    # the sampler's logits on top of the activations
    assert pp2.binding_stage == 1
    assert pp2.weight_bytes == pytest.approx(s0 + 2 * llama.hidden_size, rel=1e-9)
    assert pp2.pp == 2 and pp2.num_gpu_blocks > 0 and tp16.num_gpu_blocks > 0


def test_mla_caches_one_latent_per_token_and_layer_whatever_the_tp():
    ds, fp8 = model("deepseek_v3"), precision("fp8", "h200")
    per_token = (512 + 64) * 61 * 2  # bf16: vLLM's kv_cache_dtype auto is the model dtype
    for layout in (ParallelSpec(tp=8), ParallelSpec(tp=1, dp=8, ep=8)):
        assert stage_kv_bytes_per_token(ds, fp8, layout, 0) == per_token


def test_ep8_holds_32_whole_experts_per_gpu():
    ds, fp8 = model("deepseek_v3"), precision("fp8", "h200")
    ep8 = stage_weight_bytes(ds, fp8, ParallelSpec(tp=1, dp=8, ep=8), 0)
    tp8 = stage_weight_bytes(ds, fp8, ParallelSpec(tp=8), 0)
    experts = 58 * 32 * 3 * 7168 * 2048  # fp8: a byte each
    assert ep8 > experts and ep8 - experts < 25 * GB  # attention, dense layers, embeddings
    assert tp8 == pytest.approx(671e9 / 8, rel=0.08)  # about an eighth of everything


def test_dp_attention_gives_every_rank_its_own_kv_cache():
    ds, h200, fp8 = model("deepseek_v3"), hardware("h200"), precision("fp8", "h200")
    knobs = dict(block_size=16, gpu_memory_utilization=0.9, max_num_batched_tokens=8192,
                 max_num_seqs=1024, max_model_len=16384)  # fmt: skip
    tp8 = plan_memory(ds, h200, fp8, 8, parallel=ParallelSpec(tp=8), **knobs)
    dp8 = plan_memory(ds, h200, fp8, 1, parallel=ParallelSpec(tp=1, dp=8, ep=8), **knobs)
    assert dp8.num_engine_blocks == 8 * dp8.num_gpu_blocks
    assert dp8.num_engine_blocks > 3 * tp8.num_engine_blocks


# ---- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "hw", "layout", "match"),
    [
        ("llama3_8b", "h100_sxm", dict(pp=33), "exceeds llama3_8b's 32 layers"),
        ("deepseek_v3", "h200", dict(tp=1, dp=3, ep=3), "does not divide deepseek_v3's 256 experts"),
        ("deepseek_v3", "h200", dict(tp=2, dp=2, ep=2), "must equal dp x tp = 4"),
        ("deepseek_v3", "h200", dict(tp=1, dp=8), "set parallel.ep=8"),
        ("llama3_8b", "h100_sxm", dict(dp=2, ep=2), "dense"),
        ("llama3_8b", "h100_sxm", dict(ep=2), "has no experts"),
        ("llama3_8b", "l40s", dict(tp=16), "no network between nodes"),
        ("llama3_8b", "h100_sxm", dict(tp=12), "multiple of the 8 GPUs"),
        ("llama3_8b", "l40s", dict(tp=8, pp=2), "no network between nodes"),
        ("deepseek_v3", "h200", dict(tp=1, dp=8, ep=8, ep_load_imbalance=0.5), ">= 1"),
    ],
)
def test_a_layout_that_cannot_work_is_one_clear_error(name, hw, layout, match):
    args = dict(tp=1, pp=1, dp=1, ep=1, ep_load_imbalance=None) | layout
    with pytest.raises(ConfigError, match=match):
        build_parallel_spec(model(name), hardware(hw), **args)


def test_batch_queue_depth_is_vllms():
    assert ParallelSpec(pp=1).max_concurrent_batches(True) == 2
    assert ParallelSpec(pp=1).max_concurrent_batches(False) == 1
    assert ParallelSpec(pp=2).max_concurrent_batches(True) == 3  # model runner v2
    assert ParallelSpec(pp=2).max_concurrent_batches(True, v2_model_runner=False) == 2
    assert ParallelSpec(pp=4).max_concurrent_batches(False) == 4


# ---- the bubble, end to end -------------------------------------------------------------


def _busy(tmp_path, budget):
    from conftest import compose_config
    from sim.config.build import build_run_spec, resolved_config
    from sim.run import simulate

    cfg = compose_config([
        "parallel.pp=2", "workload.arrival=offline", "workload.num_requests=64",
        "workload.prompt_tokens.kind=fixed", "workload.prompt_tokens.value=100",
        "workload.output_tokens.kind=fixed", "workload.output_tokens.value=200",
        f"scheduler.max_num_batched_tokens={budget}", "scheduler.enable_prefix_caching=false",
        "output.print_summary=false", "output.progress=false", "output.write_steps=false",
    ])  # fmt: skip
    spec = build_run_spec(cfg)
    return simulate(spec, tmp_path / str(budget), resolved_config(cfg)).summary["utilization"]["busy_fraction"]


def test_one_group_of_requests_leaves_half_a_two_stage_pipeline_idle(tmp_path):
    """64 requests prefilled in one step sample together, so they decode every other step
    and the steps in between are empty: each stage works at most half the time. Prefilled in
    two steps (a budget of 3,200 tokens) they form two groups that take turns and fill it."""
    one_group, two_groups = _busy(tmp_path, 8192), _busy(tmp_path, 3200)
    assert one_group < 0.5
    assert two_groups > 0.8
