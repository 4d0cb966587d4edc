"""One simulation run: build the deployment, replay the workload, write tables, summary, manifest."""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import signal
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np
import simpy

import sim
from sim.clients import start_traffic
from sim.config.build import RunSpec
from sim.core.request import Request
from sim.cost.engine_costs import EngineCosts
from sim.deploy.compare import compare_runs
from sim.deploy.figures import add_pool_figures, run_shape
from sim.deploy.wiring import build_deployment_engines
from sim.kv_offload.summary import hbm_only_figures, offload_summary
from sim.memory import kv_memory_statement
from sim.metrics.spec_summary import speculative_summary
from sim.spec_compare import compare_speculative
from sim.metrics.recorder import Recorder
from sim.errors import OutputError
from sim.metrics.report import format_summary
from sim.metrics.summary import summarize
from sim.metrics.tables import OutputBatch, staged_outputs, unique_tmp_path
from sim.run_folder import locked_run_folder
from sim.progress import Progress
from sim.simulation import Replica, RequestFactory
from sim.workload.request_spec import RequestSpec
from sim.workload.build import build_workload

PACKAGES = ("simpy", "numpy", "scipy", "pyarrow", "hydra-core", "omegaconf")


@dataclass(slots=True)
class RunResult:
    summary: dict[str, Any]
    manifest: dict[str, Any]
    complete: bool
    interrupted_by: str | None = None  # "SIGINT" or "SIGTERM" when not complete


class _Counted:
    """Counts the requests that arrived: the factory runs at each arrival, so a request drawn
    from the workload but due after an interruption or the horizon is not counted.

    It is also where a signal is honoured inside a long event: a million offline requests
    arrive in one SimPy event, so between-event checks alone would wait for all of them. After
    a signal no further request is made; the arrival raises `_StopArrivals` before creating
    anything, so the state stays consistent, and the event loop stops there."""

    def __init__(self, make_request: Callable[[RequestSpec], Request], stop: _StopOnSignal) -> None:
        self._make_request = make_request
        self._stop = stop
        self.count = 0

    def __call__(self, spec: RequestSpec) -> Request:
        if self._stop.signal_name is not None:
            raise _StopArrivals
        self.count += 1
        return self._make_request(spec)


class _StopArrivals(Exception):
    """Ends the arrival process that was mid-event when a signal came (see `_Counted`)."""


class _StopOnSignal:
    """While active, SIGINT (Ctrl-C) and SIGTERM only note the signal: the event loop stops
    between two events, so no request is caught half-way through a scheduler update, and the
    Parquet files are closed before the process can be interrupted again."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():  # else handlers cannot be set
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._note)
        return self

    def _note(self, signum: int, frame: Any) -> None:
        self.signal_name = self.signal_name or signal.Signals(signum).name

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _run_events(env: simpy.Environment, horizon_s: float | None, stop: _StopOnSignal) -> None:
    """`env.run(until=horizon_s)` that also stops on a signal. As with SimPy's `until`, events
    due at the horizon itself are not processed."""
    until = math.inf if horizon_s is None else horizon_s
    step, peek = env.step, env.peek  # peek() is inf once no event is left
    try:
        while stop.signal_name is None and peek() < until:
            step()
    except _StopArrivals:  # a signal inside a long arrival event: stop there
        assert stop.signal_name is not None


def simulate(spec: RunSpec, out_dir: Path, resolved_config: dict[str, Any]) -> RunResult:
    """Run to completion (or until interrupted) and write every output under `out_dir`.

    The folder is locked while the run writes into it (a second run into it is refused), the
    tables take their final names together just before the summary and the manifest, and a
    run that fails leaves none of its files behind: a full disk or a folder that cannot be
    written is an OutputError that says so."""
    with locked_run_folder(out_dir), staged_outputs() as batch:
        try:
            return _simulate(spec, out_dir, resolved_config, batch)
        except OSError as exc:
            if not _is_output_failure(exc, out_dir):
                raise
            removed = batch.discard()
            raise OutputError(
                f"cannot write the outputs in {out_dir}: {exc.strerror or exc}; "
                + (f"the {len(removed)} partial file(s) were removed" if removed else "nothing was left behind")
            ) from None


def _is_output_failure(exc: OSError, out_dir: Path) -> bool:
    """An OSError of the writers: on a file of the run folder, or from pyarrow (which names
    no file; traces and profiles were all read before any writer opened)."""
    if exc.filename is None:
        return True
    return Path(exc.filename).resolve().parent == out_dir.resolve()


def _simulate(
    spec: RunSpec, out_dir: Path, resolved_config: dict[str, Any], batch: OutputBatch
) -> RunResult:
    wall_start = time.perf_counter()
    # Workload and cost model first: a bad trace or cost setting fails before any file is opened.
    specs = build_workload(
        spec.workload,
        np.random.SeedSequence(spec.seed),
        max_model_len=spec.scheduler.max_model_len,
        block_size=spec.block_size if spec.enable_prefix_caching else None,
    )
    env = simpy.Environment()
    recorder = Recorder(
        out_dir, write_steps=spec.write_steps, timeline_interval_s=spec.timeline_interval_s
    )
    progress = Progress(
        enabled=spec.progress,
        total_requests=spec.workload.num_requests,
        horizon_s=spec.horizon_s or spec.workload.duration_s,
    )
    deployment = build_deployment_engines(spec, env, recorder, progress.tick, _engine_rng)
    replicas = deployment.replicas
    cost_model, engine_costs = deployment.pools[0].cost_model, deployment.pools[0].engine_costs
    stop = _StopOnSignal()
    arrivals = _Counted(RequestFactory(spec.block_size, spec.enable_prefix_caching), stop)
    start_traffic(env, specs, arrivals, deployment.entry_points, deployment.router, recorder,
                  spec.workload.max_concurrency)  # fmt: skip
    with stop:
        try:
            _run_events(env, spec.horizon_s, stop)
        finally:
            progress.close()
            for request in deployment.pending():
                recorder.record_unfinished(request)
            for replica in replicas:
                recorder.record_evictions(replica.scheduler.kv_cache_manager.block_pool.num_evicted_total)
            recorder.close()
    interrupted_by = stop.signal_name  # "SIGINT" or "SIGTERM": partial outputs
    complete = interrupted_by is None
    _check_conservation(replicas)  # a signal stops the loop between events: invariants hold
    # Inter-token gaps as (value, count) pairs: one pair per step covers a whole decode batch.
    itl, itl_counts = recorder.inter_token_latencies()
    shape = run_shape(spec, deployment.spec, arrivals.count)
    summary = {
        "scenario": spec.scenario_name,
        "question": spec.question,
        "complete": complete,
        "setup": _setup(spec),
        **summarize(recorder, shape, spec.slo, itl, itl_counts),
        **speculative_summary(spec.speculative, replicas, deployment.spec_cost_models, recorder, itl, itl_counts),
        "assumptions": _assumptions(spec, cost_model, engine_costs),
    }
    if spec.kv_offload is not None:
        interrupted_by = _offload_figures(spec, replicas, summary, out_dir, resolved_config) or interrupted_by
        complete = interrupted_by is None
    if len(deployment.pools) > 1 or deployment.proxy is not None:
        add_pool_figures(summary, deployment, recorder)
    if complete and spec.speculative is not None and spec.speculative.compare_rates:
        summary["speculative_comparison"] = compare_speculative(spec, out_dir / "compare")
    manifest = {
        "complete": complete,
        "interrupted_by": interrupted_by,
        "horizon_s": spec.horizon_s,
        "seed": spec.seed,
        "sim_version": sim.__version__,
        "vllm_behaviour_matched": sim.VLLM_VERSION_MATCHED,
        "assumptions": summary["assumptions"],
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "wall_time_s": time.perf_counter() - wall_start,
        "events_simulated": arrivals.count + recorder.steps.num_steps,
        "arrivals": arrivals.count,
        "engine_steps": recorder.steps.num_steps,
        "outputs": ["requests.parquet", "summary.json"]
        + (["steps.parquet"] if spec.write_steps else [])
        + (["timeline.parquet"] if spec.timeline_interval_s > 0 else []),
        "resolved_config": resolved_config,
    }
    batch.publish()  # the tables take their final names, then the summary; the manifest last
    if spec.alternatives and complete:  # read the published requests.parquet: after publish
        summary["comparison"] = compare_runs(spec, summary, out_dir, _simulate_quiet)
    _write_json(out_dir / "summary.json", summary)
    batch.published(out_dir / "summary.json")
    _write_json(out_dir / "manifest.json", manifest)
    if spec.print_summary:
        print(format_summary(summary))
        print(f"\noutputs in {out_dir}")
    return RunResult(summary, manifest, complete, interrupted_by)


def _offload_figures(
    spec: RunSpec, replicas: list[Replica], summary: dict[str, Any], out_dir: Path,
    resolved_config: dict[str, Any],
) -> str | None:
    """The tiers' counters into the summary and, with `compare_hbm_only`, the same run
    without offload (into out_dir/hbm_only); the signal that interrupted that run, if any."""
    connectors = [r.scheduler.connector for r in replicas]
    summary["kv_offload"] = offload_summary(spec.kv_offload, connectors, summary["duration_s"])
    if not (spec.compare_hbm_only and summary["complete"]):
        return None
    baseline = simulate(
        dataclasses.replace(spec, kv_offload=None, compare_hbm_only=False, print_summary=False),
        out_dir / "hbm_only",
        resolved_config,
    )
    if not baseline.complete:  # interrupted during the comparison: the whole run says so
        summary["complete"] = False
        return baseline.interrupted_by
    summary["kv_offload"]["hbm_only"] = hbm_only_figures(baseline.summary)
    return None


ENGINE_STREAM = 0xE6  # spawn-key tag: the engine's streams are apart from the workload's


def _engine_rng(seed: int, replica_id: int) -> np.random.Generator:
    """Replica `replica_id`'s engine stream (launch spread), independent of the workload's
    streams, which are the children of SeedSequence(seed)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(ENGINE_STREAM, replica_id)))


def _check_conservation(replicas: list[Replica]) -> None:
    """Every block acquired was released once no request is left holding any."""
    for replica in replicas:
        pool = replica.scheduler.kv_cache_manager.block_pool
        pool.check_invariants()
        connector = replica.scheduler.connector
        if connector is not None and hasattr(connector, "check_invariants"):
            connector.check_invariants()
        if not replica.scheduler.has_unfinished_requests() and not replica.scheduler.sending:
            assert pool.num_acquired_total == pool.num_released_total, (
                pool.num_acquired_total,
                pool.num_released_total,
            )


def _setup(spec: RunSpec) -> dict[str, Any]:
    return {
        "model": spec.model.name,
        "hardware": spec.hardware.name,
        "precision": spec.precision.name,
        "kv_cache_dtype": spec.precision.kv_cache_dtype,
        "tp": spec.tp,
        **({"layout": spec.parallel.describe()} if spec.parallel.num_gpus != spec.tp else {}),
        **({"pp": spec.parallel.pp} if spec.parallel.pp > 1 else {}),
        **({"dp": spec.parallel.dp, "ep": spec.parallel.ep} if spec.parallel.ep > 1 else {}),
        "replicas": spec.num_replicas,
        "gpus": spec.gpus_per_replica * spec.num_replicas,
        "router": spec.router,
        "max_num_seqs": spec.scheduler.max_num_seqs,
        "max_num_batched_tokens": spec.scheduler.max_num_batched_tokens,
        "max_model_len": spec.scheduler.max_model_len,
        "block_size": spec.block_size,
        "num_gpu_blocks": spec.memory.num_engine_blocks,
        "kv_cache_tokens": spec.memory.num_engine_blocks * spec.block_size,
        "enable_prefix_caching": spec.enable_prefix_caching,
        "async_scheduling": spec.async_scheduling,
        **({"speculative": spec.speculative.describe()} if spec.speculative is not None else {}),
        "memory": spec.memory.describe(),
        "memory_source": spec.hardware.memory_source,
        **_deployment_setup(spec),
    }


def _deployment_setup(spec: RunSpec) -> dict[str, Any]:
    """A multi-pool deployment: its pools, and the run-wide counts over all of them."""
    dep = spec.deployment
    if dep is None or (dep.classic and len(dep.pools) == 1):
        return {}
    return {
        "deployment": dep.describe(),
        "deployment_name": dep.name,
        "replicas": dep.num_replicas,
        "gpus": dep.num_gpus,
        "router": (f"prefill {dep.prefill_router}, decode {dep.decode_router}" if dep.disaggregated else dep.router),
        "num_gpu_blocks": sum(p.memory.num_gpu_blocks * p.num_replicas for p in dep.pools),
        "kv_cache_tokens": sum(p.memory.num_gpu_blocks * p.num_replicas for p in dep.pools) * spec.block_size,
        "pools": {
            p.name: {"role": p.role, "hardware": p.hardware.name, "precision": p.precision.name,
                     "tp": p.tp, "replicas": p.num_replicas, "max_num_seqs": p.scheduler.max_num_seqs,
                     "max_num_batched_tokens": p.scheduler.max_num_batched_tokens,
                     "num_gpu_blocks": p.memory.num_gpu_blocks, "batch_limits": p.defaults_source}
            for p in dep.pools
        },
    }  # fmt: skip


def _simulate_quiet(spec: RunSpec, out_dir: Path, resolved: dict[str, Any]) -> dict[str, Any]:
    """One of the setups `deployment.compare` names, into its own folder; its summary."""
    return simulate(spec, out_dir, resolved).summary


def _assumptions(spec: RunSpec, cost_model: Any, engine_costs: EngineCosts) -> dict[str, Any]:
    return {
        "vllm_behaviour_matched": sim.VLLM_VERSION_MATCHED,
        **cost_model.assumptions(),
        "clocks": _clocks(spec.hardware),
        "engine_loop": _engine_loop(spec),
        "engine_time_source": engine_costs.source,
        "engine_time_fit_error": engine_costs.fit_error or "none: not fitted",
        "scheduler_defaults": spec.defaults_source,
        "kv_block_size": spec.block_size_source or f"{spec.block_size} (scheduler.block_size)",
        "kv_memory": kv_memory_statement(spec.memory, spec.hardware.memory_source),
    }


def _engine_loop(spec: RunSpec) -> str:
    depth = spec.parallel.max_concurrent_batches(spec.async_scheduling, not spec.model.is_moe)
    if spec.parallel.pp > 1:
        return f"pipeline of {spec.parallel.pp} stages, batch queue of {depth}" + (
            " (async scheduling)" if spec.async_scheduling else ""
        )
    return "async scheduling (batch queue of 2)" if spec.async_scheduling else "serial"


def _clocks(hardware: Any) -> str:
    boost = f" ({hardware.boost_clock_mhz:.0f} MHz)" if hardware.boost_clock_mhz else ""
    if hardware.sustained_clock_ratio < 1.0:
        return (
            f"compute peaks at {hardware.sustained_clock_ratio:.0%} of the boost clock{boost}"
            " (hardware.sustained_clock_ratio); HBM bandwidth at datasheet"
        )
    return f"datasheet peaks at boost clock{boost}" if boost else "datasheet peaks"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = unique_tmp_path(path)
    try:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
