"""The summary of a multi-pool run: its shape for the run-wide figures, and the per-pool
utilisation, cost, energy and KV-transfer figures added to it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow.parquet as pq

from sim.deploy.spec import DeploymentSpec
from sim.economics import PowerModel, cost_energy, pooled_cost_energy
from sim.metrics.pools import pool_summary, transfer_summary
from sim.metrics.summary import RunShape


def run_shape(spec: Any, dep: DeploymentSpec, num_arrived: int) -> RunShape:
    """One pool: its own figures. Several: replica-weighted mean peaks (so the run's MFU is
    the mean over replicas of each one's MFU) and the deployment's GPU count; cost and energy
    are replaced by the sum over pools (`add_pool_figures`)."""
    pools = dep.pools
    if len(pools) == 1:
        p = pools[0]
        return RunShape(
            num_replicas=p.num_replicas,
            gpus_per_replica=spec.gpus_per_replica if dep.classic else p.tp,
            peak_flops=p.hardware.peak_flops[p.precision.activation_dtype],
            memory_bandwidth=p.hardware.memory_bandwidth,
            num_arrived=num_arrived,
            tdp_w=p.hardware.tdp_w,
            idle_power_w=p.hardware.idle_power_w,
            price_per_hour_usd=p.hardware.price_per_hour_usd,
        )
    n = dep.num_replicas
    mean = lambda f: sum(f(p) * p.num_replicas for p in pools) / n  # noqa: E731
    return RunShape(
        num_replicas=n,
        gpus_per_replica=max(p.tp for p in pools),
        peak_flops=mean(lambda p: p.hardware.peak_flops[p.precision.activation_dtype]),
        memory_bandwidth=mean(lambda p: p.hardware.memory_bandwidth),
        num_arrived=num_arrived,
        num_gpus=dep.num_gpus,
    )


def add_pool_figures(summary: dict[str, Any], deployment: Any, recorder: Any) -> None:
    duration_s = summary["duration_s"]
    summary["pools"] = {
        e.pool.name: pool_summary(e.pool, e.replicas, duration_s) for e in deployment.pools
    }
    if deployment.proxy is None:  # colocated pools: queueing from the request rows
        _add_queueing(summary["pools"], deployment, recorder)
    steps = _step_columns(recorder)
    output_tokens = summary["throughput"]["output_tokens_per_s"] * duration_s
    total_tokens = summary["throughput"]["total_tokens_per_s"] * duration_s
    parts = []
    for e in deployment.pools:
        p = e.pool
        hw = p.hardware
        power = PowerModel(
            idle_w=hw.idle_power_w,
            tdp_w=hw.tdp_w,
            peak_flops=hw.peak_flops[p.precision.activation_dtype],
            memory_bandwidth=hw.memory_bandwidth,
        )
        stats = [r.stats for r in e.replicas]
        mine = None
        if steps is not None:
            keep = np.isin(steps["replica_id"], np.asarray(list(p.replica_ids)))
            mine = {k: steps[k][keep] for k in ("flops", "bytes", "duration_s")}
        part = cost_energy(
            power, hw.price_per_hour_usd, p.num_replicas, p.tp, duration_s,
            busy_s=sum(s.busy_s for s in stats), flops=sum(s.flops for s in stats),
            bytes_=sum(s.bytes for s in stats), output_tokens=output_tokens,
            total_tokens=total_tokens, steps=mine,
        )  # fmt: skip
        parts.append({**part, "pool": p.name})
    summary["cost_energy"] = pooled_cost_energy(parts, duration_s, output_tokens, total_tokens)
    if deployment.transfers is not None:
        summary["kv_transfer"] = transfer_summary(deployment.transfers.log, deployment.transfers.service)


def _step_columns(recorder: Any) -> dict[str, np.ndarray] | None:
    writer = recorder.steps_writer
    if writer is None or not writer.written_path.exists():
        return None
    table = pq.read_table(writer.written_path, columns=["replica_id", "flops", "bytes", "duration_s"])
    return {name: table.column(name).to_numpy() for name in table.column_names}


def _add_queueing(pools: dict[str, Any], deployment: Any, recorder: Any) -> None:
    """Per pool, over its finished requests: time from arrival to first scheduling, and TTFT."""
    path = recorder.requests_writer.written_path
    if not path.exists():
        return
    table = pq.read_table(path, columns=["replica_id", "status", "arrival_s", "first_scheduled_s", "ttft_s"])
    cols = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    finished = cols["status"] == "finished"
    for e in deployment.pools:
        mine = finished & np.isin(cols["replica_id"], np.asarray(list(e.pool.replica_ids)))
        queue = cols["first_scheduled_s"][mine] - cols["arrival_s"][mine]
        pools[e.pool.name]["requests_finished"] = int(mine.sum())
        pools[e.pool.name]["queue_s"] = _dist(queue)
        pools[e.pool.name]["ttft_s"] = _dist(cols["ttft_s"][mine])


def _dist(a: np.ndarray) -> dict[str, float | None]:
    if a.size == 0:
        return {"mean": None, "p50": None, "p99": None}
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99))}
