"""`python -m sim.plan` with its two candidate axes beyond GPU x precision x TP x PP:
prefill/decode splits (`--pd`, `--pd-tp`; one prefill+decode group is the unit of scaling)
and engine layouts with DP attention and expert parallelism (`--layout`, MoE models)."""

from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

from sim.config.build import build_run_spec
from sim.errors import ConfigError
from sim.plan.__main__ import main
from sim.plan.evaluate import compose_candidate
from sim.plan.space import Candidate, Layout, PdSplit, candidates, parse_layouts, parse_pairs
from sim.sweep.capacity import replica_counts, scaling_units, unit_gpus_and_price, with_units

QUICK = ["--seeds", "1", "--confirm-factor", "1", "--no-progress", "--launcher", "serial"]


def _rows(out):
    return {r["candidate"]: r for r in pq.read_table(out / "plan.parquet").to_pylist()}


def test_pd_splits_are_ranked_beside_classic_candidates(tmp_path, capsys):
    # A TPOT target tight enough that decode steps without prefill chunks pay: P/D is sized.
    args = ["+scenario=llama8b_h100", "--target-rate", "100", "--ttft-p99", "1", "--tpot-p99", "0.02",
            "--hardware", "h100_sxm", "--tp", "1", "--pd", "1:1", "--requests", "120", "--tol", "0.2",
            *QUICK, "-o", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "P/D rows: a replica is one prefill+decode group" in out
    rows = _rows(tmp_path)
    assert set(rows) == {"h100_sxm bf16 TP1", "h100_sxm bf16 P/D 1:1 TP1"}
    pd = rows["h100_sxm bf16 P/D 1:1 TP1"]
    assert (pd["scaling_unit"], pd["pd"], pd["prefill_replicas"], pd["decode_replicas"]) == ("pd_group", "1:1", 1, 1)
    assert (pd["prefill_tp"], pd["decode_tp"], pd["layout"], pd["tp"]) == (1, 1, None, None)
    assert pd["status"] == "ok" and pd["gpus_per_replica"] == 2  # both pools
    assert pd["gpus"] == 2 * pd["replicas"]
    assert pd["usd_per_hour"] == pytest.approx(pd["gpus"] * pd["price_per_gpu_hour_usd"])
    assert len(pd["curve_rate"]) >= 2 and pd["seed_spread_rate"] is not None
    # Sized by simulation: the target was simulated on more than one group (every pool
    # scaled; one group alone cannot hold it), priced and metered over both pools.
    assert pd["sizing"] == "simulated" and pd["meets_slo"]
    assert pd["replicas"] >= 2 and pd["capacity_per_replica_rate"] < 100
    assert pd["replicas"] >= math.ceil(100 / pd["capacity_per_replica_rate"] - 1e-9) - 1
    assert pd["joules_per_output_token"] > 0 and pd["usd_per_million_output_tokens_at_goodput"] > 0
    classic = rows["h100_sxm bf16 TP1"]
    assert (classic["scaling_unit"], classic["pd"], classic["layout"]) == ("replica", None, "tp1")


def test_a_pd_group_scales_every_pool_together():
    cand = Candidate("h100_sxm", "bf16", 4, pd=PdSplit(1, 3, 8, 4))
    cfg = compose_candidate(["+scenario=pd_llama70b_h100"], cand)
    assert OmegaConf.to_container(cfg.deployment.compare) == {}  # a probe runs one setup
    assert scaling_units(cfg) == 1 and replica_counts(cfg) == (1, 3)
    assert replica_counts(with_units(cfg, 3)) == (3, 9)
    gpus, usd = unit_gpus_and_price(build_run_spec(cfg))
    assert gpus == 1 * 8 + 3 * 4 and usd == pytest.approx(gpus * float(cfg.hardware.price_per_hour_usd))
    # A classic candidate of a P/D scenario runs parallel.* alone, not the scenario's pools.
    classic = compose_candidate(["+scenario=pd_llama70b_h100"], Candidate("h100_sxm", "bf16", 4))
    assert OmegaConf.to_container(classic.deployment.pools) == {}
    assert replica_counts(with_units(classic, 3)) == (3,) and unit_gpus_and_price(build_run_spec(classic))[0] == 4


def test_a_mixed_pool_is_priced_at_each_pools_own_gpu(compose_cfg):
    """2x H100 TP4 + 2x H200 TP2: 12 GPUs, each pool at its own GPU's $/h."""
    spec = build_run_spec(compose_cfg(["+scenario=mixed_pool_llama70b"]))
    gpus, usd = unit_gpus_and_price(spec)
    by_gpu = {p.hardware.name: p.hardware.price_per_hour_usd for p in spec.deployment.pools}
    assert set(by_gpu) == {"h100_sxm", "h200"} and by_gpu["h100_sxm"] != by_gpu["h200"]
    assert gpus == 2 * 4 + 2 * 2 and usd == pytest.approx(8 * by_gpu["h100_sxm"] + 4 * by_gpu["h200"])


def test_tp8_and_dp8_ep8_for_deepseek_v3(tmp_path):
    args = ["+scenario=deepseek_v3_h200_ep8", "--target-users", "128", "--hardware", "h200",
            "--layout", "tp8,dp8ep8", "--requests", "40", "--tol", "0.3", "--no-plot", *QUICK,
            "-o", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    rows = _rows(tmp_path)
    assert set(rows) == {"h200 fp8 TP8", "h200 fp8 TP1 DP8 EP8"}
    ep = rows["h200 fp8 TP1 DP8 EP8"]
    assert (ep["tp"], ep["dp"], ep["ep"], ep["layout"], ep["gpus_per_replica"]) == (1, 8, 8, "dp8ep8", 8)
    assert rows["h200 fp8 TP8"]["gpus_per_replica"] == 8 and rows["h200 fp8 TP8"]["ep"] == 1
    for row in rows.values():
        assert row["status"] == "ok" and row["gpus"] == 8 * row["replicas"]
    # Each DP rank holds its own KV cache: the engine has 8 of them.
    assert ep["kv_cache_tokens"] > rows["h200 fp8 TP8"]["kv_cache_tokens"]


def test_a_dense_model_skips_moe_layouts_with_a_note(tmp_path, capsys):
    args = ["+scenario=llama8b_h100", "--target-rate", "5", "--hardware", "h100_sxm",
            "--layout", "tp1,dp2ep2", "--requests", "40", "--tol", "0.5", "--no-plot", *QUICK,
            "-o", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "skipped layout dp2ep2 for llama3_8b (a dense model): parallel.dp=2 is data-parallel attention" in out
    assert set(_rows(tmp_path)) == {"h100_sxm bf16 TP1"}


@pytest.mark.parametrize("args, message", [
    (["+scenario=deepseek_v3_h200_ep8", "--target-users", "64", "--hardware", "h200", "--layout", "dp8ep4"],
     "--layout dp8ep4: parallel.ep=4 must equal dp x tp = 8"),
    (["+scenario=deepseek_v3_h200_ep8", "--target-users", "64", "--hardware", "h200", "--layout", "dp8"],
     "--layout dp8: parallel.dp=8 is vLLM's DP attention with expert parallelism: set parallel.ep=8"),
    (["+scenario=llama8b_h100", "--target-rate", "5", "--hardware", "h100_sxm", "--layout", "dp2ep2"],
     "no layout of the plan applies to llama3_8b"),
    (["+scenario=llama8b_h100", "--target-rate", "5", "--layout", "tp1", "--tp", "2"], "not both"),
    (["+scenario=llama8b_h100", "--target-rate", "5", "--layout", "tq4"], "expected sizes like tp8"),
    (["+scenario=llama8b_h100", "--target-rate", "5", "--hardware", "h100_sxm", "--pd-tp", "1:1"], "give --pd too"),
    (["+scenario=llama8b_h100", "--target-rate", "5", "--hardware", "h100_sxm", "--pd", "1-2"],
     "expected prefill:decode"),
    (["+scenario=llama8b_h100", "kv_offload=cpu", "--target-rate", "5", "--hardware", "h100_sxm", "--pd", "1:1"],
     "--pd with kv_offload=cpu: a host tier is modelled for the single engine"),
    (["+scenario=llama70b_h100_specdec", "--target-rate", "5", "--hardware", "h100_sxm", "--pd", "1:1", "--tp", "4"],
     "speculative decoding is modelled for the single engine of parallel.* only"),
])  # fmt: skip
def test_what_the_engine_or_pools_refuse_is_one_line(args, message, capsys):
    assert main([*args, "--no-progress", "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_the_axes_parse():
    assert parse_layouts("tp8, dp8ep8,DP8xEP8,tp2pp2") == [
        Layout(8), Layout(1, 1, 8, 8), Layout(1, 1, 8, 8), Layout(2, 2)]
    assert [lay.token for lay in parse_layouts("tp8,dp8ep8,tp2dp4ep8")] == ["tp8", "dp8ep8", "tp2dp4ep8"]
    for bad in ("tp8tp4", "8", "tp0"):
        with pytest.raises(ConfigError):
            parse_layouts(bad)
    assert parse_pairs("1:1,2:1", "pd", "instance counts") == [(1, 1), (2, 1)]
    with pytest.raises(ConfigError):
        parse_pairs("0:1", "pd", "instance counts")
    space = candidates(["h200"], ["fp8"], [Layout(8)], splits=[PdSplit(1, 2, 8, 8), PdSplit(1, 1, 4, 8)])
    assert [c.label for c in space] == ["h200 fp8 TP8", "h200 fp8 P/D 1:2 TP8", "h200 fp8 P/D 1:1 TP4:8"]
    pd = space[2]
    assert "parallel.tp=8" in pd.overrides()  # the run-wide engine holds the larger pool's TP
    assert pd.pools()["decode"] == {"role": "decode", "replicas": 1, "tp": 8}


def test_a_plan_file_takes_the_new_axes_and_refuses_unquoted_pairs(tmp_path):
    from sim.plan.__main__ import parse_args

    path = tmp_path / "plan.yaml"
    path.write_text("layout: [tp8, dp8ep8]\npd: ['1:1', '1:2']\npd_tp: '8:8'\n")
    args = parse_args(["--plan", str(path)])
    assert (args.layout, args.pd, args.pd_tp) == ("tp8,dp8ep8", "1:1,1:2", "8:8")
    path.write_text("pd: [1:1, 1:2]\n")  # YAML 1.1: 61 and 62
    with pytest.raises(ConfigError, match="quote each prefill:decode pair"):
        parse_args(["--plan", str(path)])
