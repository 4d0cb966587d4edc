"""Fits of the expert-parallel all-to-all and pipeline send/recv measurements
(sim.calibrate.comm_fit), on rows in the format calibration/measure_alltoall.py and
measure_p2p.py write; and those scripts themselves on CPU (gloo) where torch is installed."""

from __future__ import annotations

import csv
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sim.calibrate.comm_fit import fit_alltoall, fit_p2p
from sim.calibrate.profile_fit import add_comm_sections

SIZES = [2**k for k in range(12, 29)]


def alltoall_rows(latency_s, busbw, eps=(2, 4, 8), mode="graph"):
    return [
        {"ep": str(ep), "bytes": str(b), "mode": mode, "ms": str((latency_s + (ep - 1) / ep * b / busbw) * 1e3)}
        for ep in eps for b in SIZES
    ]  # fmt: skip


def test_the_all_to_all_fit_recovers_latency_and_bus_bandwidth_per_ep():
    section, errors = fit_alltoall(alltoall_rows(25e-6, 350e9) + alltoall_rows(1.0, 1e9, mode="eager"))
    assert sorted(section, key=int) == ["2", "4", "8"]
    for fit in section.values():
        assert fit["latency_s"] == pytest.approx(25e-6, rel=1e-3)
        assert fit["bus_bandwidth"] == pytest.approx(350e9, rel=1e-3)
        assert fit["measured_bytes"] == SIZES  # eager rows left out
    assert errors["alltoall_ep8"]["max"] < 1e-3


def test_the_send_recv_fit_recovers_latency_and_bandwidth():
    rows = [{"src": "0", "dst": "1", "bytes": str(b), "mode": "graph", "ms": str((8e-6 + b / 400e9) * 1e3)}
            for b in SIZES]  # fmt: skip
    section, errors = fit_p2p(rows)
    assert section["0-1"]["latency_s"] == pytest.approx(8e-6, rel=1e-3)
    assert section["0-1"]["bandwidth"] == pytest.approx(400e9, rel=1e-3)
    assert "p2p_0-1" in errors


def test_one_message_size_cannot_fit_two_parameters():
    with pytest.raises(ValueError, match="two message sizes"):
        fit_alltoall(alltoall_rows(25e-6, 350e9, eps=(2,))[:1])


def test_the_profile_gains_comm_sections_only_where_measured():
    profile = {"fit_errors": {}}
    add_comm_sections(profile, alltoall_rows(25e-6, 350e9, eps=(8,)), [])
    assert set(profile["alltoall"]) == {"8"} and "p2p" not in profile
    assert "alltoall_ep8" in profile["fit_errors"]


SCRIPTS = Path(__file__).resolve().parent.parent / "calibration"


@pytest.mark.skipif(importlib.util.find_spec("torch") is None or shutil.which("torchrun") is None,
                    reason="torch not installed (the calibration scripts' CPU smoke test)")
@pytest.mark.parametrize("script, flags", [
    ("measure_alltoall.py", ["--ep", "2"]), ("measure_p2p.py", []), ("measure_allreduce.py", ["--tp", "2"]),
])  # fmt: skip
def test_the_measurement_scripts_run_on_cpu_and_their_rows_fit(tmp_path, script, flags):
    subprocess.run(["torchrun", "--nproc-per-node", "2", str(SCRIPTS / script), "--tiny", "--reps", "3",
                    "--out-dir", str(tmp_path), "--prefix", "cpu", *flags],
                   check=True, capture_output=True, timeout=300, cwd=SCRIPTS)  # fmt: skip
    (path,) = tmp_path.glob("cpu_*.csv")
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 5 and all(float(r["ms"]) > 0 for r in rows)
    graph_like = [{**r, "mode": "graph"} for r in rows]  # CPU rows are eager; fit them anyway
    if script == "measure_alltoall.py":
        assert set(fit_alltoall(graph_like)[0]) == {"2"}
    elif script == "measure_p2p.py":
        assert set(fit_p2p(graph_like)[0]) == {"0-1"}
