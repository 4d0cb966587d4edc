"""Multirun sweeps in parallel (joblib launcher) and their collection into one Parquet table."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sim.sweep.collect import collect, flatten, main as collect_main
from conftest import REPO_ROOT

TINY = [
    "workload.num_requests=12",
    "output.print_summary=false",
    "output.progress=false",
    "output.write_steps=false",
]


def multirun(sweep_dir: Path, args: list[str], launcher: str, jobs: int = 2) -> None:
    env = {**os.environ, "SIM_JOBS": str(jobs), "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, "-m", "sim", "-m", *args, *TINY, f"hydra/launcher={launcher}",
           f"hydra.sweep.dir={sweep_dir}"]
    proc = subprocess.run(cmd, cwd=sweep_dir.parent, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def joblib_sweep(tmp_path_factory) -> Path:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path_factory.mktemp("sweeps") / "eight"
    multirun(sweep, ["+scenario=llama8b_h100", "hardware=h100_sxm,h200", "precision=bf16,fp8",
                     "scheduler.max_num_seqs=64,256"], launcher="local_parallel")
    return sweep


def test_eight_run_joblib_sweep_collects_to_eight_rows(joblib_sweep, tmp_path):
    out = tmp_path / "sweep.parquet"
    assert collect_main([str(joblib_sweep), "-o", str(out)]) == 0
    table = pq.read_table(out)
    rows = table.to_pylist()
    assert len(rows) == 8 and sorted(r["job"] for r in rows) == list(range(8))
    swept = json.loads(table.schema.metadata[b"swept"])
    assert swept == ["hardware", "precision", "scheduler.max_num_seqs"]
    combos = {(r["hardware"], r["precision"], r["scheduler.max_num_seqs"]) for r in rows}
    assert len(combos) == 8
    for row in rows:
        # the scenario (a ConfigStore entry) composed for every job, in whichever process
        assert row["scenario"] == "llama8b_h100" and row["status"] == "ok" and row["complete"]
        assert row["setup.hardware"] == row["hardware"] and row["setup.precision"] == row["precision"]
        assert row["setup.max_num_seqs"] == row["scheduler.max_num_seqs"]
        assert row["latency_s.ttft.p99"] > 0 and row["cost_energy.usd_per_million_output_tokens"] > 0
    assert table.schema.field("scheduler.max_num_seqs").type == "int64"


def test_a_failed_job_keeps_its_row(joblib_sweep, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(joblib_sweep, copy)
    (copy / "3" / "summary.json").unlink()
    rows = collect(copy).to_pylist()
    assert len(rows) == 8
    failed = [r for r in rows if r["status"] == "failed"]
    assert [r["job"] for r in failed] == [3] and failed[0]["latency_s.ttft.p99"] is None
    assert (copy / "sweep.parquet").exists()


def test_flatten_names_nested_keys_with_dots():
    assert flatten({"a": {"b": 1, "c": {"d": None}}, "e": [1, 2]}) == {
        "a.b": 1, "a.c.d": None, "e": "[1, 2]"}


def test_collect_refuses_a_folder_without_jobs(tmp_path, capsys):
    assert collect_main([str(tmp_path)]) == 2
    assert "no Hydra jobs" in capsys.readouterr().err


def test_launcher_configs_compose():
    from conftest import compose_config
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from sim.config.scenarios import CONFIG_DIR

    compose_config()  # registers the schemas
    for name in ("local_parallel", "slurm"):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            cfg = compose("config", overrides=[f"hydra/launcher={name}"], return_hydra_config=True)
        assert cfg.hydra.launcher._target_.startswith("hydra_plugins.")
    assert cfg.hydra.launcher.cpus_per_task == 1
    assert (REPO_ROOT / "configs" / "hydra" / "launcher" / "ray_cluster.yaml").exists()
