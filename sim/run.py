"""One simulation run: build the deployment, replay the workload, write tables, summary, manifest."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import simpy

import sim
from sim.config.build import RunSpec
from sim.core.kv_cache_manager import KVCacheManager
from sim.core.scheduler import Scheduler
from sim.cost.roofline import build_cost_model
from sim.metrics.recorder import Recorder
from sim.metrics.report import format_summary
from sim.metrics.summary import RunShape, summarize
from sim.progress import Progress
from sim.router import make_router
from sim.simulation import Replica, RequestFactory, arrival_process
from sim.workload.request_spec import RequestSpec
from sim.workload.build import build_requests

PACKAGES = ("simpy", "numpy", "scipy", "pyarrow", "hydra-core", "omegaconf")


@dataclass(slots=True)
class RunResult:
    summary: dict[str, Any]
    manifest: dict[str, Any]
    complete: bool


class _Counted:
    """Counts the specs the arrival process pulls from the workload."""

    def __init__(self, specs: Iterator[RequestSpec]) -> None:
        self._specs = specs
        self.count = 0

    def __iter__(self) -> Iterator[RequestSpec]:
        for spec in self._specs:
            self.count += 1
            yield spec


def simulate(spec: RunSpec, out_dir: Path, resolved_config: dict[str, Any]) -> RunResult:
    """Run to completion (or until interrupted) and write every output under `out_dir`."""
    wall_start = time.perf_counter()
    env = simpy.Environment()
    recorder = Recorder(out_dir, write_steps=spec.write_steps)
    cost_model = build_cost_model(spec.model, spec.hardware, spec.precision, spec.tp, spec.cost)
    progress = Progress(enabled=spec.progress)
    replicas = [
        Replica(
            replica_id,
            env,
            Scheduler(
                spec.scheduler,
                KVCacheManager(
                    spec.memory.num_gpu_blocks,
                    spec.block_size,
                    spec.scheduler.max_model_len,
                    spec.enable_prefix_caching,
                ),
            ),
            cost_model,
            recorder,
            on_step=progress.tick,
        )
        for replica_id in range(spec.num_replicas)
    ]
    workload_seed = np.random.SeedSequence(spec.seed)
    specs = _Counted(
        build_requests(spec.workload, workload_seed, max_model_len=spec.scheduler.max_model_len)
    )
    env.process(
        arrival_process(
            env,
            specs,
            RequestFactory(spec.block_size, spec.enable_prefix_caching),
            replicas,
            make_router(spec.router, spec.num_replicas),
            recorder,
        )
    )
    complete = True
    try:
        env.run()
    except KeyboardInterrupt:
        complete = False
    finally:
        progress.close()
        for replica in replicas:
            for request in (*replica.scheduler.running, *replica.scheduler.waiting):
                recorder.record_unfinished(request)
        recorder.close()

    if complete:
        _check_conservation(replicas)
    itl = np.concatenate(
        [
            np.repeat(
                np.frombuffer(r.scheduler.itl_s, dtype=np.float64),
                np.frombuffer(r.scheduler.itl_count, dtype=np.int64),
            )
            for r in replicas
        ]
    )
    shape = RunShape(
        num_replicas=spec.num_replicas,
        gpus_per_replica=spec.tp,
        peak_flops=spec.hardware.peak_flops[spec.precision.activation_dtype],
        memory_bandwidth=spec.hardware.memory_bandwidth,
        num_arrived=specs.count,
        tdp_w=spec.hardware.tdp_w,
        idle_power_w=spec.hardware.idle_power_w,
        price_per_hour_usd=spec.hardware.price_per_hour_usd,
    )
    summary = {
        "scenario": spec.scenario_name,
        "question": spec.question,
        "complete": complete,
        "setup": _setup(spec),
        **summarize(recorder, shape, spec.slo, itl),
        "assumptions": _assumptions(spec, cost_model),
    }
    manifest = {
        "complete": complete,
        "seed": spec.seed,
        "sim_version": sim.__version__,
        "vllm_behaviour_matched": sim.VLLM_VERSION_MATCHED,
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "wall_time_s": time.perf_counter() - wall_start,
        "events_simulated": specs.count + recorder.steps.num_steps,
        "arrivals": specs.count,
        "engine_steps": recorder.steps.num_steps,
        "outputs": ["requests.parquet", "summary.json"]
        + (["steps.parquet"] if spec.write_steps else []),
        "resolved_config": resolved_config,
    }
    _write_json(out_dir / "summary.json", summary)
    _write_json(out_dir / "manifest.json", manifest)
    if spec.print_summary:
        print(format_summary(summary))
        print(f"\noutputs in {out_dir}")
    return RunResult(summary, manifest, complete)


def _check_conservation(replicas: list[Replica]) -> None:
    """Every block acquired was released once no request is left holding any."""
    for replica in replicas:
        pool = replica.scheduler.kv_cache_manager.block_pool
        pool.check_invariants()
        if not replica.scheduler.has_unfinished_requests():
            assert pool.num_acquired_total == pool.num_released_total, (
                pool.num_acquired_total,
                pool.num_released_total,
            )


def _setup(spec: RunSpec) -> dict[str, Any]:
    return {
        "model": spec.model.name,
        "hardware": spec.hardware.name,
        "precision": spec.precision.name,
        "tp": spec.tp,
        "replicas": spec.num_replicas,
        "gpus": spec.tp * spec.num_replicas,
        "router": spec.router,
        "max_num_seqs": spec.scheduler.max_num_seqs,
        "max_num_batched_tokens": spec.scheduler.max_num_batched_tokens,
        "max_model_len": spec.scheduler.max_model_len,
        "block_size": spec.block_size,
        "num_gpu_blocks": spec.memory.num_gpu_blocks,
        "kv_cache_tokens": spec.memory.num_gpu_blocks * spec.block_size,
        "enable_prefix_caching": spec.enable_prefix_caching,
        "memory": spec.memory.describe(),
    }


def _assumptions(spec: RunSpec, cost_model: Any) -> dict[str, Any]:
    return {
        "vllm_behaviour_matched": sim.VLLM_VERSION_MATCHED,
        "efficiency_source": cost_model.provenance(),
        "clocks": _clocks(spec.hardware),
        "cpu_overhead_per_step_ms": spec.cost.step_overhead_ms,
    }


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
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)
