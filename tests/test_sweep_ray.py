"""The same sweep through Hydra's Ray launcher on a local Ray instance.

Ray is not a test dependency (it is large): without `ray` and `hydra-ray-launcher` installed
(`pip install -e '.[ray]'`) this module is skipped.
"""

from __future__ import annotations

import importlib.util

import pytest

from sim.sweep.collect import collect

if importlib.util.find_spec("ray") is None or importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None:
    pytest.skip("Ray or hydra-ray-launcher not installed (pip install -e '.[ray]')", allow_module_level=True)

from test_sweep import multirun  # noqa: E402


def test_ray_launcher_sweep_runs_on_a_local_ray_instance(tmp_path):
    sweep = tmp_path / "ray"
    multirun(sweep, ["+scenario=llama8b_h100", "precision=bf16,fp8"], launcher="ray_local")
    rows = collect(sweep).to_pylist()
    assert sorted(r["precision"] for r in rows) == ["bf16", "fp8"]
    assert all(r["status"] == "ok" and r["scenario"] == "llama8b_h100" for r in rows)


def test_a_plan_on_a_local_ray_instance_gives_the_rows_serial_gives(tmp_path):
    from sim.plan.__main__ import main

    args = ["+scenario=llama8b_h100", "--target-rate", "30", "--ttft-p99", "2", "--tpot-p99", "0.1",
            "--hardware", "h100_sxm,h200", "--tp", "1", "--seeds", "1", "--requests", "150",
            "--confirm-factor", "1", "--tol", "0.15", "--no-progress", "--no-plot"]  # fmt: skip
    assert main([*args, "--launcher", "serial", "-o", str(tmp_path / "serial")]) == 0
    assert main([*args, "--launcher", "ray_local", "-o", str(tmp_path / "ray")]) == 0
    serial = (tmp_path / "serial" / "plan.parquet").read_bytes()
    assert serial == (tmp_path / "ray" / "plan.parquet").read_bytes()
