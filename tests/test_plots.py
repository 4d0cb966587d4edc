"""analysis/: every plot renders from the output files alone, and the dashboard's binned series
add up to the run's summary."""

from __future__ import annotations

import ast
import sys

import numpy as np
import pytest

from sim.config.build import build_run_spec, resolved_config
from sim.run import simulate
from conftest import REPO_ROOT, compose_config

sys.path.insert(0, str(REPO_ROOT))
from analysis import plot, plots_sweep  # noqa: E402
from analysis.runs import Run  # noqa: E402
from analysis.timeline import apportion, bin_run  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def simulate_into(folder, overrides):
    cfg = compose_config(["+scenario=llama8b_h100", "workload.num_requests=80",
                          "output.print_summary=false", "output.progress=false", *overrides])
    simulate(build_run_spec(cfg), folder, resolved_config(cfg))
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return simulate_into(tmp_path_factory.mktemp("run"), [])


def is_png(path) -> bool:
    return path.exists() and path.read_bytes()[:8] == PNG and path.stat().st_size > 10_000


def test_run_plots_render(run_dir, tmp_path):
    assert plot.main(["run", str(run_dir), "-o", str(tmp_path)]) == 0
    for name in ("roofline", "operators", "dashboard"):
        assert is_png(tmp_path / f"{name}.png"), name


def test_dashboard_series_add_up_to_the_summary(run_dir):
    run = Run(run_dir)
    b = bin_run(run, num_bins=50)
    s = run.summary
    per_bin = b.width_s * run.num_replicas
    assert (b.busy <= 1.0 + 1e-9).all()
    assert b.busy.sum() * per_bin == pytest.approx(s["utilization"]["busy_fraction"] * s["duration_s"], rel=1e-6)
    energy = b.power_w.sum() * per_bin  # idle counted to the end of the last bin
    tail_idle = (len(b.t_s) * b.width_s - s["duration_s"]) * s["cost_energy"]["power_model"]["idle_w"]
    assert energy - tail_idle == pytest.approx(s["cost_energy"]["energy_j"], rel=1e-3)
    assert b.decode_tokens_per_s.sum() * b.width_s == pytest.approx(s["steps"]["decode_tokens"])


def test_apportion_splits_a_step_across_bin_edges():
    edges = np.array([0.0, 1.0, 2.0, 3.0])
    sums = apportion(np.array([0.5, 2.2]), np.array([1.0, 0.5]), np.array([10.0, 4.0]), edges)
    assert sums.tolist() == pytest.approx([5.0, 5.0, 4.0])


def test_sweep_plots_render(tmp_path):
    rates = np.array([4.0, 8.0, 16.0, 4.0, 8.0, 16.0])
    table = {
        "workload.rate": rates,
        "precision": np.array(["bf16"] * 3 + ["fp8"] * 3, dtype=object),
        "scheduler.max_num_seqs": np.array([32, 64, 128] * 2),
        "throughput.output_tokens_per_s": rates * 250,
        "latency_s.ttft.p99": np.array([0.1, 0.3, 5.0, 0.08, 0.1, 0.9]),
        "latency_s.tpot.p99": np.array([0.01, 0.02, 0.05, 0.008, 0.012, 0.03]),
        "utilization.mfu": np.array([0.1, 0.2, 0.3, 0.05, 0.1, 0.15]),
    }
    out = plots_sweep.latency_throughput(table, tmp_path / "lat.png", by=["precision"], slo_ttft_s=2, slo_tpot_s=0.1)
    assert is_png(out)
    assert is_png(plots_sweep.batch_knee(table, tmp_path / "knee.png", by=["precision"], slo_tpot_s=0.1))


def test_side_by_side_of_two_hardware_choices(run_dir, tmp_path):
    other = simulate_into(tmp_path / "h200", ["hardware=h200"])
    out = tmp_path / "compare.png"
    assert plot.main(["compare", str(run_dir), str(other), "-o", str(out)]) == 0
    assert is_png(out)


READERS = ("runs", "timeline", "style", "plots_run", "plots_sweep", "plot", "studies",
           "study_llama70b_hardware", "study_llama8b_fp8")


def test_plots_and_studies_never_import_the_simulator():
    for path in (REPO_ROOT / "analysis" / f"{name}.py" for name in READERS):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "sim" or n.startswith("sim.") for n in names), path
