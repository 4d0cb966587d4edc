"""One run per run folder, and no complete-looking tables from a run that failed: unique
temporary names per writer, a lock on the folder, tables published together with the
manifest, and a full disk or an unusable folder reported as one error with the cleanup done."""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sim.config.build import build_run_spec, resolved_config
from sim.core.scheduler import Scheduler
from sim.errors import OutputError
from sim.metrics.tables import ChunkedParquetWriter
from sim.run import simulate
from conftest import REPO_ROOT, compose_config

QUIET = ["output.print_summary=false", "output.progress=false"]
SCHEMA = pa.schema([("x", pa.int64())])


def _small_run(out_dir: Path):
    cfg = compose_config([*QUIET, "workload.num_requests=40"])
    return simulate(build_run_spec(cfg), out_dir, resolved_config(cfg))


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_two_writers_of_one_file_never_share_a_temporary_file(tmp_path):
    path = tmp_path / "t.parquet"
    first, second = ChunkedParquetWriter(path, SCHEMA), ChunkedParquetWriter(path, SCHEMA)
    for i in range(10):
        first.append((i,))
        second.append((100 + i,))
    first.close()
    assert pq.read_table(path).column("x").to_pylist() == list(range(10))
    second.close()
    assert pq.read_table(path).column("x").to_pylist() == list(range(100, 110))
    assert _leftovers(tmp_path) == ["t.parquet"]


def test_a_run_folder_in_use_is_refused_and_left_alone(tmp_path):
    tmp_path.joinpath("requests.parquet").write_bytes(b"another run's file")
    fd = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what a run in progress holds on its folder
    try:
        with pytest.raises(OutputError, match="is in use by another run"):
            _small_run(tmp_path)
    finally:
        os.close(fd)
    assert tmp_path.joinpath("requests.parquet").read_bytes() == b"another run's file"
    assert _small_run(tmp_path).complete  # free again: the run goes ahead


def test_a_second_command_into_a_running_folder_exits_2_and_the_first_stays_valid(tmp_path):
    first = subprocess.Popen(
        [sys.executable, "-m", "sim", *QUIET, "workload.rate=50", "workload.num_requests=1000000",
         f"hydra.run.dir={tmp_path}"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".requests.parquet.*.tmp")):
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    second = subprocess.run(
        [sys.executable, "-m", "sim", *QUIET, "workload.num_requests=20", f"hydra.run.dir={tmp_path}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=60)
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert second.stderr.strip().splitlines()[-1].startswith("error: the run folder")
    assert first.returncode == 130
    assert pq.read_table(tmp_path / "requests.parquet").num_rows > 0


def test_a_run_that_crashes_leaves_no_tables(tmp_path, monkeypatch):
    schedule = Scheduler.schedule
    calls = {"n": 0}

    def failing(self, now):
        calls["n"] += 1
        if calls["n"] > 50:
            raise RuntimeError("a bug in the middle of the run")
        return schedule(self, now)

    monkeypatch.setattr(Scheduler, "schedule", failing)
    with pytest.raises(RuntimeError, match="a bug"):
        _small_run(tmp_path)
    assert _leftovers(tmp_path) == []


def test_a_full_disk_is_one_error_and_the_partial_files_are_removed(tmp_path, monkeypatch):
    write_table = pq.ParquetWriter.write_table

    def full(self, table, *args, **kwargs):
        if "steps" in str(getattr(self, "where", "")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_table(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    with pytest.raises(OutputError) as info:
        _small_run(tmp_path)
    assert "No space left on device" in str(info.value) and "were removed" in str(info.value)
    assert _leftovers(tmp_path) == []


def test_a_file_in_the_way_of_the_run_folder_is_one_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="cannot use the run folder"):
        _small_run(blocker / "run")
