"""A sweep with one bad job runs every other job, records the failure in the bad job's
folder, exits 2 at the end, and `collect` lists every job with its status."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq

from sim.sweep.collect import FAILURE_FILE, main as collect_main
from conftest import REPO_ROOT


def test_one_bad_job_does_not_end_the_sweep(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "sim", "-m", "output.print_summary=false", "output.progress=false",
         "workload.num_requests=5", "scheduler.max_num_seqs=4,0,8", f"hydra.sweep.dir={sweep}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: 1 job(s) of the sweep failed (1)")
    assert (sweep / "0" / "summary.json").exists() and (sweep / "2" / "summary.json").exists()
    failure = json.loads((sweep / "1" / FAILURE_FILE).read_text())
    assert failure["status"] == "failed" and "max_num_seqs=0" in failure["error"]
    assert not (sweep / "1" / "summary.json").exists()

    assert collect_main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "job 1: failed: scheduler.max_num_seqs=0 must be positive" in out
    assert "3 runs (1 failed, 0 interrupted)" in out
    table = pq.read_table(sweep / "sweep.parquet").to_pydict()
    assert table["status"] == ["ok", "failed", "ok"]
    assert table["error"][0] is None and "max_num_seqs=0" in table["error"][1]
