"""Deployments: pools, links, KV transfers, P/D admission, routers, pooled cost, config checks."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import simpy

from sim.catalog import hardware_spec_from_config, load_catalog_entry, model_spec_from_config
from sim.catalog import precision_spec_from_config
from sim.config.build import build_run_spec, resolved_config
from sim.deploy.cache_router import CacheAwareRouter, PrefixIndex
from sim.deploy.links import LinkNetwork
from sim.deploy.spec import CacheAwareSpec
from sim.deploy.topology import Placement, place, route
from sim.deploy.transfer import KVTransferService, kv_transfer_bytes
from sim.errors import ConfigError
from sim.router import LeastOutstandingRouter, WeightedRoundRobinRouter
from sim.run import simulate
from conftest import compose_config

QUIET = ["output.print_summary=false", "output.progress=false"]
GB = 1e9


def _hardware(name: str = "h100_sxm", **changes):
    return dataclasses.replace(hardware_spec_from_config(load_catalog_entry("hardware", name)), **changes)


# ---- links and transfers, timed by hand ------------------------------------------------------


def test_two_transfers_on_one_nic_share_it_and_land_when_computed_by_hand():
    """Replica 0 (node 0) sends to replica 1 (node 1) over 8 NICs of 1 GB/s = 8 GB/s, after a
    1 ms latency. A: 8 GB at t=0 flows alone from 0.001 s, moving 4 GB by 0.501 s. B: 2 GB
    sent at 0.5 s flows from 0.501 s; both then get 4 GB/s: B lands at 0.501 + 2/4 = 1.001 s,
    A has 4 - 2 = 2 GB left and gets all 8 GB/s: it lands at 1.001 + 2/8 = 1.251 s."""
    hw = _hardware(nics_per_node=8, nic_bandwidth=1 * GB, nic_latency_s=1e-3, max_gpus_per_node=8)
    placements = place([(0, "prefill", 8, hw), (1, "decode", 8, hw)])
    assert [p.node_id for p in placements] == [0, 1]
    env = simpy.Environment()
    service = KVTransferService(env, placements)
    landed: dict[str, float] = {}
    service.submit(0, 1, 8 * GB, lambda t: landed.setdefault("A", t))
    env.timeout(0.5).callbacks.append(lambda _: service.submit(0, 1, 2 * GB, lambda t: landed.setdefault("B", t)))
    env.run()
    assert landed["B"] == pytest.approx(1.001, abs=1e-9)
    assert landed["A"] == pytest.approx(1.251, abs=1e-9)
    assert service.bytes_by_kind == {"nvlink": 0.0, "rdma": 10 * GB}


def test_max_min_fairness_gives_the_unbottlenecked_flow_what_is_left():
    """Ports a (cap 10), b (cap 4): flows x on a+b, y on a. x is held to 4 by b; y gets 6."""
    net = LinkNetwork({(0, "a"): 10.0, (1, "b"): 4.0})
    net.start(1, ((0, "a"), (1, "b")), 100.0, 0.0)
    net.start(2, ((0, "a"),), 100.0, 0.0)
    assert (net.flows[1].rate, net.flows[2].rate) == pytest.approx((4.0, 6.0))
    assert net.next_completion_s() == pytest.approx(100.0 / 6.0)


def test_placement_packs_pools_in_order_and_picks_the_link():
    hw = _hardware()
    placements = place([(0, "prefill", 4, hw), (1, "decode", 4, hw), (2, "decode", 4, hw), (3, "decode", 4, hw)])
    assert [p.node_id for p in placements] == [0, 0, 1, 1]
    assert route(placements[0], placements[1]).kind == "nvlink"
    assert route(placements[0], placements[2]).kind == "rdma"
    other = _hardware("h200")
    assert [p.node_id for p in place([(0, "a", 4, hw), (1, "b", 2, other), (2, "c", 4, hw)])] == [0, 1, 0]


def test_kv_bytes_follow_the_receiving_tp_layout():
    """Llama-3.1-70B: 80 layers, 8 KV heads of 128, bf16: 2 x 80 x 8 x 128 x 2 = 327,680 bytes
    per token over the whole TP group while TP <= 8; at TP16 each head is held twice."""
    model = model_spec_from_config(load_catalog_entry("model", "llama3_70b"))
    hw = _hardware()
    bf16 = precision_spec_from_config(load_catalog_entry("precision", "bf16"), hw)
    fp8kv = precision_spec_from_config(load_catalog_entry("precision", "fp8_kv"), hw)
    for tp in (2, 4, 8):
        assert kv_transfer_bytes(model, bf16, tp, num_blocks=10, block_size=16) == 160 * 327_680
    assert kv_transfer_bytes(model, bf16, 16, 10, 16) == 2 * 160 * 327_680
    assert kv_transfer_bytes(model, fp8kv, 4, 10, 16) == 160 * 327_680 // 2


# ---- P/D end to end: two requests -------------------------------------------------------------


def _pd_cfg(extra: list[str]):
    return compose_config([
        "+scenario=llama70b_h100", "deployment=pd_1p3d_h100", "workload.arrival=constant",
        "workload.rate=0.5", "workload.num_requests=2", "workload.prompt_tokens.kind=fixed",
        "workload.prompt_tokens.value=1000", "workload.output_tokens.kind=fixed",
        "workload.output_tokens.value=20", "output.timeline_interval_s=0", *QUIET, *extra,
    ])  # fmt: skip


def test_two_pd_requests_move_their_prompt_kv_and_decode_only_after_it_lands(tmp_path):
    cfg = _pd_cfg([])
    spec = build_run_spec(cfg)
    result = simulate(spec, tmp_path, resolved_config(cfg))
    s = result.summary
    assert s["requests"]["finished"] == 2 and s["requests"]["arrived"] == 2
    t = s["kv_transfer"]
    # 1000 tokens = 63 blocks of 16 (the last partial block moves too) x 327,680 bytes per token
    assert t["bytes_per_request"]["mean"] == 63 * 16 * 327_680
    assert t["transfers"] == 2
    # Least-loaded decode routing: two requests far apart both go to decode replica 1, on the
    # prefill's node: the KV goes over NVLink (4 GPUs x 450 GB/s) after its 6 us latency.
    assert t["bytes_by_link"]["rdma"] == 0.0
    assert t["transfer_s"]["mean"] == pytest.approx(6e-6 + 63 * 16 * 327_680 / (4 * 450e9), rel=1e-9)
    rows = pq.read_table(tmp_path / "requests.parquet").to_pylist()
    assert {r["replica_id"] for r in rows} == {1}  # the decode leg is the client's answer
    assert all(r["output_tokens_generated"] == 20 for r in rows)
    # The decode step after the transfer computes one token (the prompt's last): every decode
    # replica's scheduled tokens are the 2 x (1 + 19) it generated.
    steps = pq.read_table(tmp_path / "steps.parquet").to_pydict()
    decode = np.isin(steps["replica_id"], [1, 2, 3])
    assert np.asarray(steps["num_scheduled_tokens"])[decode].sum() == 2 * 20
    assert np.asarray(steps["num_scheduled_tokens"])[~decode].sum() == 2 * 1000
    # TTFT covers prefill, the answer's way back, the transfer and the first decode step.
    assert s["kv_transfer"]["prefill_ttft_s"]["mean"] < s["latency_s"]["ttft"]["mean"]


def test_pd_frees_every_block_in_both_pools(tmp_path):
    cfg = _pd_cfg(["workload.num_requests=30", "workload.rate=20"])
    spec = build_run_spec(cfg)
    simulate(spec, tmp_path, resolved_config(cfg))  # run.py asserts acquired == released per replica


# ---- routers ---------------------------------------------------------------------------------


class _Replica:
    def __init__(self, capacity: float, outstanding: int = 0) -> None:
        self.capacity, self.num_outstanding = capacity, outstanding


def test_weighted_round_robin_follows_capacity_and_equal_weights_are_round_robin():
    router = WeightedRoundRobinRouter([3.0, 1.0])
    picks = [router.route([]) for _ in range(8)]
    assert picks.count(0) == 6 and picks.count(1) == 2
    router = WeightedRoundRobinRouter([1.0, 1.0, 1.0])
    assert [router.route([]) for _ in range(6)] == [0, 1, 2, 0, 1, 2]


def test_least_outstanding_weighs_by_capacity():
    assert LeastOutstandingRouter().route([_Replica(1.0, 2), _Replica(3.0, 4)]) == 1
    assert LeastOutstandingRouter().route([_Replica(1.0, 2), _Replica(1.0, 2)]) == 0


def test_prefix_index_sees_routed_blocks_only_after_the_lag_and_keeps_at_most_capacity():
    index = PrefixIndex([4, 4], lag_s=1.0)
    index.add(0, (1, 2, 3), now_s=0.0)
    index.advance(0.5)
    assert index.match(0, (1, 2, 3)) == 0
    index.advance(1.0)
    assert index.match(0, (1, 2, 3, 9)) == 3 and index.match(1, (1, 2)) == 0
    index.add(0, (5, 6), now_s=1.0)
    index.advance(2.0)
    assert index.match(0, (1,)) == 0 and index.match(0, (2, 3)) == 2  # 1 was least recent


class _Sched:
    def __init__(self, waiting: int, usage: float) -> None:
        self.waiting = [None] * waiting
        self.kv_cache_manager = type("KV", (), {"usage": usage, "num_usable_blocks": 100})()


class _Instance:
    def __init__(self, waiting: int = 0, usage: float = 0.0) -> None:
        self.capacity, self.in_transit, self.scheduler = 1.0, {}, _Sched(waiting, usage)


class _Req:
    def __init__(self, hashes: tuple[int, ...], t: float) -> None:
        self.block_hashes, self.arrival_s = hashes, t


def test_cache_aware_router_follows_the_prefix_unless_the_queue_outweighs_it():
    instances = [_Instance(), _Instance()]
    router = CacheAwareRouter(instances, CacheAwareSpec(lag_s=0.0))
    assert router.route(instances, _Req((7, 8, 9, 10), 0.0)) == 0
    instances[0].scheduler.waiting = [None]  # one queued: queue score 0 against 1
    # 0: prefix 1 + queue 0 + kv 1; 1: prefix 0 + queue 1 + kv 1: a tie goes to the first
    assert router.route(instances, _Req((7, 8, 9, 10), 1.0)) == 0
    instances[0].scheduler.waiting = [None] * 5
    heavy = CacheAwareRouter(instances, CacheAwareSpec(prefix_weight=0.5, queue_weight=1.0))
    heavy.index.add(0, (7, 8), 0.0)
    assert heavy.route(instances, _Req((7, 8), 2.0)) == 1


# ---- config checks: one line naming the key ----------------------------------------------------


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["deployment=pd_1p3d_h100", "deployment.pools.decode.tp=1"], "deployment.pools.decode"),
        (["deployment=pd_1p3d_h100", "deployment.pools.decode.hardware=h100_pcie",
          "deployment.pools.prefill.hardware=h100_pcie"], "nics_per_node"),
        (["deployment=pd_1p3d_h100", "deployment.pools.decode.precision=fp8_kv"], "deployment.pools.decode.precision"),
        (["deployment=pd_1p3d_h100", "deployment.pools.decode.role=colocated"], "deployment.pools"),
        (["deployment=pd_1p3d_h100", "deployment.pools.decode.role=decoder"], "deployment.pools.decode.role"),
        (["deployment=pd_1p3d_h100", "deployment.pools.decode.tp=16"], "deployment.pools.decode.tp"),
        (["deployment=pd_1p3d_h100", "deployment.decode_router=cache_aware"], "deployment.decode_router"),
        (["deployment=mixed_h100x2_h200x2", "deployment.pools.h200.hardware=tpu"], "deployment.pools.h200.hardware"),
        (["deployment.cache_aware.lag_s=-1"], "deployment.cache_aware.lag_s"),
    ],
)
def test_bad_deployments_are_refused_naming_the_key(overrides, key):
    cfg = compose_config(["+scenario=llama70b_h100", *overrides, *QUIET])
    with pytest.raises(ConfigError) as err:
        build_run_spec(cfg)
    message = str(err.value)
    assert key in message and "\n" not in message


# ---- mixed pools -----------------------------------------------------------------------------


def test_mixed_pool_cost_and_energy_are_the_sums_over_pools(tmp_path):
    cfg = compose_config([
        "+scenario=mixed_pool_llama70b", "deployment.compare={}", "workload.num_requests=60",
        "workload.rate=12", *QUIET,
    ])  # fmt: skip
    spec = build_run_spec(cfg)
    s = simulate(spec, tmp_path, resolved_config(cfg)).summary
    ce, duration = s["cost_energy"], s["duration_s"]
    h100, h200 = spec.deployment.pools
    expected = (8 * h100.hardware.price_per_hour_usd + 4 * h200.hardware.price_per_hour_usd) * duration / 3600
    assert ce["gpus"] == 12 and ce["cost_usd"] == pytest.approx(expected)
    assert ce["energy_j"] == pytest.approx(sum(p["energy_j"] for p in ce["by_pool"].values()))
    assert s["setup"]["gpus"] == 12
    rows = pq.read_table(tmp_path / "requests.parquet").to_pylist()
    assert {r["replica_id"] for r in rows} <= {0, 1, 2, 3}
    assert s["requests"]["finished"] == 60
    assert math.isfinite(s["pools"]["h200"]["busy_fraction"])


def test_a_pd_run_is_byte_identical_when_repeated(tmp_path):
    cfg = _pd_cfg(["workload.arrival=poisson", "workload.num_requests=40", "workload.rate=30",
                   "deployment=pd_2p2d_h100", "deployment.prefill_router=cache_aware"])
    spec = build_run_spec(cfg)
    for name in ("a", "b"):
        simulate(spec, tmp_path / name, resolved_config(cfg))
    for table in ("requests.parquet", "steps.parquet"):
        assert (tmp_path / "a" / table).read_bytes() == (tmp_path / "b" / table).read_bytes()
