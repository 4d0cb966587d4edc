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
    memory_bound = H100.power_w(0.0, 0.9 * 3e12, 1.0)
    compute_bound = H100.power_w(0.5e15, 0.1 * 3e12, 1.0)
    assert 70 < memory_bound < 350 < compute_bound < 700  # decode draws less than prefill
    assert H100.power_w(0.6e15, 0.2 * 3e12, 1.0) == pytest.approx(700.0)  # dense prefill: TDP


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
    decode = ["workload.output_tokens.kind=fixed", "workload.output_tokens.value=300",
              "workload.prompt_tokens.kind=fixed", "workload.prompt_tokens.value=50"]
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
