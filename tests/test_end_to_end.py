"""Whole runs: every scenario end to end, outputs and their schemas, determinism, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sim.config.build import build_run_spec, resolved_config
from sim.metrics.tables import REQUESTS_SCHEMA, STEPS_SCHEMA
from sim.run import simulate
from conftest import REPO_ROOT, SCENARIOS, compose_config

SHORT = ["workload.num_requests=40", "output.print_summary=false", "output.progress=false"]


def run(tmp_path: Path, overrides: list[str]):
    cfg = compose_config(overrides + SHORT)
    return simulate(build_run_spec(cfg), tmp_path, resolved_config(cfg))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_scenario_runs_and_accounts_for_every_request(tmp_path, scenario):
    result = run(tmp_path, [f"+scenario={scenario}"])
    requests = pq.read_table(tmp_path / "requests.parquet")
    steps = pq.read_table(tmp_path / "steps.parquet")
    assert requests.schema.equals(REQUESTS_SCHEMA) and steps.schema.equals(STEPS_SCHEMA)
    counts = result.summary["requests"]
    assert counts["arrived"] == 40 == requests.num_rows
    assert counts["finished"] + counts["rejected"] + counts["unfinished"] == 40
    assert counts["unfinished"] == 0  # the engine drains after the last arrival
    rows = requests.to_pylist()
    for row in rows:
        if row["status"] == "finished":
            assert row["output_tokens_generated"] == row["output_tokens"]
            assert row["arrival_s"] <= row["first_scheduled_s"] <= row["first_token_s"] <= row["finish_s"]
            assert row["ttft_s"] <= row["e2e_s"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["complete"] and manifest["seed"] == 0
    assert manifest["resolved_config"]["scenario_name"] == scenario
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["throughput"]["output_tokens_per_s"] > 0
    util = summary["utilization"]
    assert 0 < util["mfu"] < 1 and 0 < util["memory_bandwidth_utilization"] < 1
    assert 0 < util["busy_fraction"] <= 1


def test_same_seed_gives_byte_identical_tables(tmp_path):
    run(tmp_path / "a", ["+scenario=llama8b_h100"])
    run(tmp_path / "b", ["+scenario=llama8b_h100"])
    run(tmp_path / "c", ["+scenario=llama8b_h100", "seed=1"])
    for name in ("requests.parquet", "steps.parquet"):
        a = (tmp_path / "a" / name).read_bytes()
        assert a == (tmp_path / "b" / name).read_bytes()
        assert a != (tmp_path / "c" / name).read_bytes()


def test_decode_is_memory_bound_and_prefill_compute_bound(tmp_path):
    # Long prompts, one output token: prefill-only steps. Short prompts, long outputs: decode.
    prefill = run(tmp_path / "p", [
        "workload.prompt_tokens.kind=fixed", "workload.prompt_tokens.value=4096",
        "workload.output_tokens.kind=fixed", "workload.output_tokens.value=1",
    ]).summary["utilization"]
    decode = run(tmp_path / "d", [
        "workload.prompt_tokens.kind=fixed", "workload.prompt_tokens.value=32",
        "workload.output_tokens.kind=fixed", "workload.output_tokens.value=512",
    ]).summary["utilization"]
    assert prefill["compute_bound_time_share"] > 0.9
    assert decode["memory_bound_time_share"] > 0.9
    assert prefill["mfu_while_busy"] > 5 * decode["mfu_while_busy"]


def test_cli_default_run_writes_outputs_into_its_hydra_folder(tmp_path):
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "sim", "workload.num_requests=30", f"hydra.run.dir={tmp_path}"],
        cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "TTFT" in proc.stdout and "MFU" in proc.stdout
    for name in ("requests.parquet", "steps.parquet", "summary.json", "manifest.json"):
        assert (tmp_path / name).is_file()
    assert (tmp_path / ".hydra" / "config.yaml").is_file()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model=llama3_405b", "parallel=tp1"], "GB"),
        (["model=no_such_model"], "Available options"),
        (["scheduler.max_num_seqs=0"], "max_num_seqs"),
    ],
)
def test_cli_bad_input_is_one_clear_message(tmp_path, overrides, message):
    proc = subprocess.run(
        [sys.executable, "-m", "sim", *overrides, f"hydra.run.dir={tmp_path}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
