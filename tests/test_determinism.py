"""The same scenario and seed give byte-identical Parquet files across processes: a fresh
process with another PYTHONHASHSEED and working directory, and each job of a multirun.

Nothing may depend on str hashing or set order: the KV block hashes hash tuples of ints
(deterministic in every process), and every table row is written in simulation order.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

TABLES = ("requests.parquet", "steps.parquet")
# Prefix caching on, so the block-hash chain is part of what must not vary between processes.
ARGS = [
    "+scenario=llama8b_h100", "workload=mooncake_conversation", "workload.num_requests=60",
    "workload.speedup=20", "scheduler.enable_prefix_caching=true", "seed=3",
    "output.print_summary=false", "output.progress=false",
]


def _sim(args: list[str], cwd: Path, hashseed: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": hashseed}
    return subprocess.Popen(
        [sys.executable, "-m", "sim", *args], cwd=cwd, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Three processes at once (two cores): two single runs and one two-job multirun."""
    root = tmp_path_factory.mktemp("determinism")
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    procs = {
        "fresh": _sim([*ARGS, f"hydra.run.dir={root / 'fresh'}"], REPO_ROOT, "0"),
        "other_cwd": _sim([*ARGS, f"hydra.run.dir={root / 'other_cwd'}"], elsewhere, "12345"),
        "multirun": _sim(
            ["-m", *[a for a in ARGS if not a.startswith("seed=")], "seed=3,3",
             f"hydra.sweep.dir={root / 'multirun'}", "hydra/launcher=basic"],
            REPO_ROOT, "random",
        ),
    }
    for name, proc in procs.items():
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{name}: {stderr}"
    return {
        "fresh": root / "fresh",
        "other_cwd": root / "other_cwd",
        "job0": root / "multirun" / "0",
        "job1": root / "multirun" / "1",
    }


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("other", ["other_cwd", "job0", "job1"])
def test_parquet_is_byte_identical_across_processes(runs, table, other):
    reference = (runs["fresh"] / table).read_bytes()
    assert len(reference) > 1000
    assert (runs[other] / table).read_bytes() == reference


def test_the_run_exercised_the_prefix_cache(runs):
    import pyarrow.parquet as pq

    cached = pq.read_table(runs["fresh"] / "requests.parquet", columns=["cached_tokens"])
    assert sum(cached.column("cached_tokens").to_pylist()) > 0
