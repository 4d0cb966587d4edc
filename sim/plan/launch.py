"""Runs a plan's candidates in parallel on the launchers the sweeps use: worker processes on
this machine (joblib, as `hydra/launcher=joblib`), or Ray tasks (`ray_local` starts Ray here,
`ray_cluster` joins `RAY_ADDRESS`, as the Hydra Ray launcher configs do). Rows come back in
candidate order whatever order the workers finish in, so a plan's table is the same for any
launcher and number of workers.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Sequence

from sim.errors import ConfigError
from sim.progress import TaskProgress
from sim.sweep.probe import TALLY, ProbeTally

LAUNCHERS = ("joblib", "ray_local", "ray_cluster", "serial")


def default_jobs() -> int:
    """`SIM_JOBS`, else every core (as the local_parallel launcher)."""
    return int(os.environ.get("SIM_JOBS") or os.cpu_count() or 1)


def run_tasks(
    work: Callable[[Any], dict[str, Any]], tasks: Sequence[Any], launcher: str = "joblib",
    jobs: int | None = None, progress: bool = True, label: str = "candidates",
    stats: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """`work(task)` for every task, in parallel; rows in task order. `stats["cpu_s"]` adds up
    the CPU time the work took in the workers (kept out of the rows: they stay reproducible),
    `stats["events_simulated"]` and `stats["engine_steps"]` what its probes simulated."""
    if launcher not in LAUNCHERS:
        raise ConfigError(f"--launcher {launcher!r} is unknown; choose one of {', '.join(LAUNCHERS)}")
    if not tasks:
        return []
    bar = TaskProgress(len(tasks), label, enabled=progress)
    rows: list[dict[str, Any] | None] = [None] * len(tasks)

    def done(index: int, result: tuple[dict[str, Any], float, ProbeTally]) -> None:
        row, cpu_s, simulated = result
        rows[index] = row
        if stats is not None:
            stats["cpu_s"] = stats.get("cpu_s", 0.0) + cpu_s
            stats["events_simulated"] = stats.get("events_simulated", 0) + simulated.events_simulated
            stats["engine_steps"] = stats.get("engine_steps", 0) + simulated.engine_steps
        bar.advance(f"{row['candidate']}: {row['status']}")

    try:
        jobs = max(1, min(jobs or default_jobs(), len(tasks) or 1))
        if launcher == "serial" or jobs == 1 and launcher == "joblib":
            for i, task in enumerate(tasks):
                done(*_indexed(work, i, task))
        elif launcher == "joblib":
            _joblib(tasks, jobs, work, done)
        else:
            _ray(tasks, launcher, work, done)
    finally:
        bar.close()
    return [row for row in rows if row is not None]


def _joblib(tasks, jobs, work, done) -> None:
    try:
        from joblib import Parallel, delayed
    except ImportError:
        raise ConfigError("--launcher joblib needs joblib: pip install -e '.[sweep]'") from None
    parallel = Parallel(n_jobs=jobs, backend="loky", return_as="generator_unordered")
    results = parallel(delayed(_indexed)(work, i, t) for i, t in enumerate(tasks))
    for index, result in results:
        done(index, result)


def _indexed(work, index: int, task: Any) -> tuple[int, tuple[dict[str, Any], float, ProbeTally]]:
    start, before = time.process_time(), dataclasses.replace(TALLY)
    row = work(task)
    return index, (row, time.process_time() - start, TALLY.since(before))


def _ray(tasks, launcher, work, done) -> None:
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--launcher {launcher} needs Ray: pip install -e '.[ray]'") from None
    if not ray.is_initialized():
        if launcher == "ray_cluster":
            ray.init(address=os.environ.get("RAY_ADDRESS", "auto"))
        else:
            ray.init()
    remote = ray.remote(num_cpus=1)(_indexed)
    pending = [remote.remote(work, i, t) for i, t in enumerate(tasks)]
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        index, result = ray.get(ready[0])
        done(index, result)
