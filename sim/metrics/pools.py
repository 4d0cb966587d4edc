"""Per-pool figures of a multi-pool deployment (mixed GPUs, or prefill/decode disaggregation):
utilisation, queueing, and for P/D the KV transfers and their share of TTFT.

Utilisation per pool, over the run's duration D and the pool's replicas R:
busy = sum of step durations / (R x D); MFU = FLOPs per GPU / (R x D x the pool GPU's peak at
its compute dtype); bandwidth utilisation likewise against its HBM bandwidth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from sim.metrics.cells import ms as _ms, pct as _pct


@dataclass(slots=True)
class ReplicaStats:
    """Running sums over one replica's applied steps."""

    num_steps: int = 0
    busy_s: float = 0.0  # GPU occupancy, as the run's busy fraction counts it
    gpu_time_s: float = 0.0
    flops: float = 0.0  # per GPU
    bytes: float = 0.0  # per GPU
    kv_usage_integral: float = 0.0

    def add_step(self, timing: Any, cost: Any, kv_usage: float) -> None:
        duration_s = timing.gpu_end_s - timing.gpu_start_s
        self.num_steps += 1
        self.busy_s += duration_s
        self.gpu_time_s += timing.gpu_time_s
        for op in cost.ops:
            self.flops += op.flops
            self.bytes += op.bytes
        self.kv_usage_integral += kv_usage * duration_s


def _dist(values: Sequence[float]) -> dict[str, float | None]:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"mean": None, "p50": None, "p99": None}
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99))}


def pool_summary(pool: Any, replicas: Sequence[Any], duration_s: float) -> dict[str, Any]:
    """`pool`: a sim.deploy.spec.PoolSpec; `replicas`: its replicas (with `stats`)."""
    stats = [r.stats for r in replicas]
    busy = sum(s.busy_s for s in stats)
    span = duration_s * len(replicas)
    peak = pool.hardware.peak_flops[pool.precision.activation_dtype]
    return {
        "role": pool.role,
        "hardware": pool.hardware.name,
        "precision": pool.precision.name,
        "tp": pool.tp,
        "replicas": pool.num_replicas,
        "gpus": pool.num_gpus,
        "num_gpu_blocks": pool.memory.num_gpu_blocks,
        "steps": sum(s.num_steps for s in stats),
        "busy_fraction": busy / span if span > 0 else None,
        "mfu": sum(s.flops for s in stats) / (span * peak) if span > 0 else None,
        "memory_bandwidth_utilization": (
            sum(s.bytes for s in stats) / (span * pool.hardware.memory_bandwidth) if span > 0 else None
        ),
        "kv_usage_mean": sum(s.kv_usage_integral for s in stats) / busy if busy > 0 else None,
    }


def transfer_summary(log: Any, service: Any) -> dict[str, Any]:
    """P/D: per finished request, the time in each leg and the KV moved (seconds, bytes)."""
    ttft = np.asarray(log.ttft_s, dtype=np.float64)
    transfer = np.asarray(log.transfer_s, dtype=np.float64)
    share = transfer / ttft if ttft.size else transfer
    return {
        "transfers": service.num_transfers,
        "bytes_total": service.bytes_total,
        "bytes_by_link": dict(service.bytes_by_kind),
        "bytes_per_request": _dist(log.bytes),
        "transfer_s": _dist(log.transfer_s),
        "prefill_queue_s": _dist(log.prefill_queue_s),
        "prefill_ttft_s": _dist(log.prefill_ttft_s),  # the prefill instance's own TTFT
        "decode_wait_for_blocks_s": _dist(log.decode_wait_blocks_s),
        "decode_queue_s": _dist(log.decode_queue_s),  # landed -> first decode step
        "ttft_share_in_transfer": {
            "mean": float(share.mean()) if share.size else None,
            "p99": float(np.percentile(share, 99)) if share.size else None,
            "of_total_ttft": float(transfer.sum() / ttft.sum()) if ttft.size and ttft.sum() > 0 else None,
        },
    }


def pool_lines(summary: dict[str, Any]) -> list[str]:
    """The pool and transfer lines of the terminal table ([] for a single pool)."""
    pools = summary.get("pools")
    if not pools:
        return []
    lines = ["", "pools        " + "  ".join(f"{name}: {p['replicas']}x {p['hardware']} TP{p['tp']} {p['precision']} ({p['role']})" for name, p in pools.items())]
    for name, p in pools.items():
        lines.append(
            f"  {name:<10} busy {_pct(p['busy_fraction'])}  MFU {_pct(p['mfu'])}  HBM BW util"
            f" {_pct(p['memory_bandwidth_utilization'])}  KV mean {_pct(p['kv_usage_mean'])} of"
            f" {p['num_gpu_blocks']:,} blocks"
            + (
                f"  {p['requests_finished']:,} requests, queue p99 {_ms(p['queue_s']['p99'])} ms,"
                f" TTFT p99 {_ms(p['ttft_s']['p99'])} ms"
                if "queue_s" in p
                else ""
            )
        )
    t = summary.get("kv_transfer")
    if t:
        gb = t["bytes_total"] / 1e9
        per = t["bytes_per_request"]["mean"]
        lines.append(
            f"KV transfer  {t['transfers']:,} transfers, {gb:,.1f} GB ({(per or 0) / 1e6:,.1f} MB mean per"
            f" request; NVLink {t['bytes_by_link']['nvlink'] / 1e9:,.1f} GB, RDMA"
            f" {t['bytes_by_link']['rdma'] / 1e9:,.1f} GB)  time mean {_ms(t['transfer_s']['mean'])} ms"
            f" p99 {_ms(t['transfer_s']['p99'])} ms"
        )
        s = t["ttft_share_in_transfer"]
        lines.append(
            f"  queueing   prefill p99 {_ms(t['prefill_queue_s']['p99'])} ms; decode: waiting for blocks"
            f" p99 {_ms(t['decode_wait_for_blocks_s']['p99'])} ms, after the transfer p99"
            f" {_ms(t['decode_queue_s']['p99'])} ms"
        )
        lines.append(
            f"  TTFT       prefill instance's own p99 {_ms(t['prefill_ttft_s']['p99'])} ms; share in the"
            f" transfer mean {_pct(s['mean'])}, p99 {_pct(s['p99'])}, of all TTFT {_pct(s['of_total_ttft'])}"
        )
    return lines
