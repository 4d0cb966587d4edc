"""Cost and energy: the power model, the summary's cost_energy section, sustained clocks."""

from __future__ import annotations

import json
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from sim.catalog import hardware_spec_from_config, load_catalog_entry
from sim.config.build import build_run_spec, resolved_config
from sim.economics import PowerModel
from sim.errors import ConfigError
from sim.metrics.report import format_summary
from sim.run import simulate
from conftest import REPO_ROOT, compose_config

sys.path.insert(0, str(REPO_ROOT))
from analysis.runs import step_power_w  # noqa: E402

QUIET = ["output.print_summary=false", "output.progress=false"]
H100 = PowerModel(idle_w=70.0, tdp_w=700.0, peak_flops=1e15, memory_bandwidth=3e12)


def run(tmp_path, overrides):
    cfg = compose_config(["+scenario=llama8b_h100", "workload.num_requests=60", *QUIET, *overrides])
    return simulate(build_run_spec(cfg), tmp_path, resolved_config(cfg))


def test_power_is_idle_without_activity_and_capped_at_tdp():
    assert H100.power_w(0.0, 0.0, 1.0) == pytest.approx(70.0)
    assert H100.power_w(1e15, 3e12, 1.0) == pytest.approx(700.0)  # both roofs: capped
    assert H100.power_w(0.6e15, 0.2 * 3e12, 1.0) == pytest.approx(700.0)  # dense prefill: TDP
    light = H100.power_w(0.05e15, 0.3 * 3e12, 1.0)
    assert 70 < light < 700


def test_the_h200_model_is_the_measured_fit():
    """On the H200 the weights reproduce the fitted joules per FLOP and per byte exactly."""
    fit = json.loads((REPO_ROOT / "sim" / "data" / "power" / "h200.json").read_text())
    h200 = PowerModel(idle_w=fit["static_w"], tdp_w=700.0, peak_flops=989.4e12, memory_bandwidth=4.8e12)
    flops, nbytes, d = 1e14, 1e12, 0.5
    expected = fit["static_w"] + fit["compute_j_per_flop"] * flops / d + fit["memory_j_per_byte"] * nbytes / d
    assert h200.power_w(flops, nbytes, d) == pytest.approx(expected, rel=1e-9)
    assert fit["fit"]["pois_6"]["samples"] > 100  # fitted to real samples, not a placeholder


def test_energy_of_a_hand_priced_step():
    """One 0.5 s step of 100 TFLOP and 1 TB on an H200, then 1.5 s idle. By hand, with the
    committed fit (138 W static, 0.962 pJ/FLOP, 124.4 pJ/byte): 138 + 192 + 249 = 579 W for
    0.5 s, then 138 W for 1.5 s: 290 + 207 = 497 J."""
    h200 = PowerModel(idle_w=137.8, tdp_w=700.0, peak_flops=989.4e12, memory_bandwidth=4.8e12)
    step_w = h200.power_w(1e14, 1e12, 0.5)
    assert step_w == pytest.approx(579.0, abs=2.0)
    energy = h200.energy_from_steps(np.array([1e14]), np.array([1e12]), np.array([0.5]), elapsed_s=2.0)
    assert energy == pytest.approx(0.5 * step_w + 1.5 * 137.8, rel=1e-9)
    assert energy == pytest.approx(497.0, abs=2.0)
    # twice the FLOPs in the same time: 138 + 385 + 249 = 772 W exceeds the limit: 700 W
    assert h200.power_w(2e14, 1e12, 0.5) == pytest.approx(700.0)
    assert h200.power_w(1.5e14, 1e12, 0.5) == pytest.approx(138 + 289 + 249, abs=3.0)


def test_summary_names_what_is_measured_and_what_is_transferred(tmp_path):
    ce = run(tmp_path, []).summary["cost_energy"]
    source = ce["power_model"]["source"]
    assert "measured on one H200" in source and "pois_20" in source and "assumed" in source


def test_run_energy_from_totals_matches_the_sum_over_steps(tmp_path):
    result = run(tmp_path, [])
    ce = result.summary["cost_energy"]
    table = pq.read_table(tmp_path / "steps.parquet", columns=["duration_s", "flops", "bytes"])
    steps = {name: np.asarray(table.column(name)) for name in table.column_names}
    model = ce["power_model"]
    busy = steps["duration_s"].sum()
    per_step = (step_power_w(steps, model) * steps["duration_s"]).sum()
    total = per_step + model["idle_w"] * (result.summary["duration_s"] - busy)
    assert ce["energy_j"] == pytest.approx(total, rel=1e-9)
    assert ce["energy_method"].startswith("per step")


def test_without_steps_the_totals_bound_the_energy(tmp_path):
    prefill_heavy = ["workload.output_tokens.kind=fixed", "workload.output_tokens.value=2",
                     "workload.prompt_tokens.kind=fixed", "workload.prompt_tokens.value=4000"]
    exact = run(tmp_path / "a", prefill_heavy).summary["cost_energy"]
    totals = run(tmp_path / "b", [*prefill_heavy, "output.write_steps=false"]).summary["cost_energy"]
    assert totals["energy_method"].startswith("from run totals")
    assert exact["energy_j"] < totals["energy_j"] < 1.2 * exact["energy_j"]  # prefill hits TDP
    # Light decode traffic on the H200 (the GPU the power model was fitted on; its decode
    # draws 450-550 W): no step near TDP. (On the H100 the transferred weights put a decode
    # at the full HBM bandwidth it reaches at the limit, and a step can touch the cap.)
    decode = ["workload.output_tokens.kind=fixed", "workload.output_tokens.value=300",
              "workload.prompt_tokens.kind=fixed", "workload.prompt_tokens.value=50",
              "workload.rate=2", "hardware=h200"]
    exact = run(tmp_path / "c", decode).summary["cost_energy"]
    totals = run(tmp_path / "d", [*decode, "output.write_steps=false"]).summary["cost_energy"]
    assert totals["energy_j"] == pytest.approx(exact["energy_j"], rel=1e-9)  # never capped


def test_cost_per_token_follows_the_hourly_price(tmp_path):
    summary = run(tmp_path, []).summary
    ce = summary["cost_energy"]
    duration, out = summary["duration_s"], summary["throughput"]["output_tokens_per_s"]
    assert ce["cost_usd"] == pytest.approx(2.99 * 1 * duration / 3600)
    assert ce["usd_per_million_output_tokens"] == pytest.approx(ce["cost_usd"] / (out * duration) * 1e6)
    assert ce["output_tokens_per_s_per_w"] == pytest.approx(out * duration / ce["energy_j"])
    assert 70 < ce["mean_power_w_per_gpu"] < 700
    text = format_summary(summary)
    assert "per M output tokens" in text and "J per output token" in text
    doubled = run(tmp_path / "b", ["hardware.price_per_hour_usd=5.98"]).summary["cost_energy"]
    assert doubled["usd_per_million_output_tokens"] == pytest.approx(2 * ce["usd_per_million_output_tokens"])


def test_unknown_price_and_power_give_no_figures(tmp_path):
    ce = run(tmp_path, ["hardware.price_per_hour_usd=0", "hardware.tdp_w=0"]).summary["cost_energy"]
    assert ce["usd_per_million_output_tokens"] is None and ce["energy_j"] is None
    assert "cost " not in format_summary(json.loads((tmp_path / "summary.json").read_text()))


def test_sustained_clock_derates_compute_not_bandwidth(tmp_path):
    entry = load_catalog_entry("hardware", "h100_sxm")
    full = hardware_spec_from_config(entry)
    entry.sustained_clock_ratio = 0.8
    derated = hardware_spec_from_config(entry)
    assert derated.peak_flops["bf16"] == pytest.approx(0.8 * full.peak_flops["bf16"])
    assert derated.vector_flops == pytest.approx(0.8 * full.vector_flops)
    assert derated.memory_bandwidth == full.memory_bandwidth
    entry.sustained_clock_ratio = 1.5
    with pytest.raises(ConfigError, match="sustained_clock_ratio"):
        hardware_spec_from_config(entry)
    prefill_heavy = ["workload.output_tokens.kind=fixed", "workload.output_tokens.value=2"]
    fast = run(tmp_path / "a", prefill_heavy).summary
    slow = run(tmp_path / "b", [*prefill_heavy, "hardware.sustained_clock_ratio=0.8"]).summary
    assert slow["steps"]["mean_gpu_time_s"] > 1.1 * fast["steps"]["mean_gpu_time_s"]
    assert slow["roofs"]["peak_flops_per_gpu"] == pytest.approx(0.8 * fast["roofs"]["peak_flops_per_gpu"])
    assert "80%" in slow["assumptions"]["clocks"]
