"""The run summary: throughput, latency percentiles, goodput, and the efficiency figures that
say which hardware ceiling bound the run (MFU, bandwidth utilisation, compute vs memory time)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.cost.breakdown import OP_CLASSES
from sim.economics import PowerModel, cost_energy
from sim.metrics.recorder import Recorder
from sim.metrics.tables import read_columns

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True, slots=True)
class SloTargets:
    ttft_s: float
    tpot_s: float
    e2e_s: float | None = None


@dataclass(frozen=True, slots=True)
class RunShape:
    """What the summary needs to know about the deployment to normalise its sums."""

    num_replicas: int
    gpus_per_replica: int
    peak_flops: float  # per GPU, at the precision's compute dtype
    memory_bandwidth: float  # per GPU, datasheet bytes/s
    num_arrived: int
    tdp_w: float = 0.0  # per GPU; 0: unknown, no energy figures
    idle_power_w: float = 0.0  # per GPU
    price_per_hour_usd: float = 0.0  # per GPU; 0: unknown, no cost figures
    num_gpus: int = 0  # 0: num_replicas x gpus_per_replica (pools of different TP set it)


def distribution(values: np.ndarray, counts: np.ndarray | None = None) -> dict[str, float | None]:
    """Mean and percentiles; with `counts`, of the values each repeated that many times.

    The percentiles equal numpy's (linear interpolation) on the repeated array, computed from
    cumulative counts so that millions of identical inter-token gaps never get expanded.
    """
    keep = np.isfinite(values)
    if counts is None:
        counts = np.ones(values.size, dtype=np.int64)
    values, counts = values[keep], counts[keep]
    total = int(counts.sum())
    if total == 0:
        return {"mean": None, **{f"p{p}": None for p in PERCENTILES}}
    order = np.argsort(values, kind="stable")
    values, cumulative = values[order], np.cumsum(counts[order])
    stats = {"mean": float(np.dot(values, counts[order]) / total)}
    for p in PERCENTILES:
        position = p / 100 * (total - 1)
        lo, hi = int(np.floor(position)), int(np.ceil(position))
        v_lo = values[np.searchsorted(cumulative, lo, side="right")]
        v_hi = values[np.searchsorted(cumulative, hi, side="right")]
        stats[f"p{p}"] = float(v_lo + (position - lo) * (v_hi - v_lo))
    return stats


def summarize(
    recorder: Recorder,
    shape: RunShape,
    slo: SloTargets,
    itl_s: np.ndarray,
    itl_counts: np.ndarray | None = None,
) -> dict[str, Any]:
    req = recorder.requests
    steps = recorder.steps
    ttft = np.frombuffer(req.ttft_s, dtype=np.float64)
    tpot = np.frombuffer(req.tpot_s, dtype=np.float64)
    e2e = np.frombuffer(req.e2e_s, dtype=np.float64)
    prompt = np.frombuffer(req.prompt_tokens, dtype=np.int64)
    output = np.frombuffer(req.output_tokens, dtype=np.int64)
    cached = np.frombuffer(req.cached_tokens, dtype=np.int64)
    num_finished = int(ttft.size)

    start = recorder.first_arrival_s if math.isfinite(recorder.first_arrival_s) else 0.0
    duration_s = max(recorder.last_event_s - start, 0.0)
    per_s = 1.0 / duration_s if duration_s > 0 else 0.0
    gpu_seconds = duration_s * shape.num_replicas  # per-GPU sums are per replica

    meets = (ttft <= slo.ttft_s) & ((tpot <= slo.tpot_s) | ~np.isfinite(tpot))
    if slo.e2e_s is not None:
        meets &= e2e <= slo.e2e_s
    num_good = int(meets.sum())

    output_generated = int(output.sum()) + req.unfinished_output_tokens
    busy_gpu = steps.gpu_time_s
    op_shares = {
        op: (t / busy_gpu if busy_gpu > 0 else 0.0) for op, t in zip(OP_CLASSES, steps.op_time_s)
    }
    return {
        "requests": {
            "arrived": shape.num_arrived,
            "finished": num_finished,
            "rejected": req.num_rejected,
            "unfinished": req.num_unfinished,
            "preemptions": req.num_preemptions,
        },
        "duration_s": duration_s,
        "throughput": {
            "requests_per_s": num_finished * per_s,
            "input_tokens_per_s": float(prompt.sum()) * per_s,
            "output_tokens_per_s": output_generated * per_s,
            "total_tokens_per_s": (float(prompt.sum()) + output_generated) * per_s,
            "output_tokens_per_s_per_gpu": output_generated
            * per_s
            / (shape.num_gpus or shape.num_replicas * shape.gpus_per_replica),
        },
        "latency_s": {
            "ttft": distribution(ttft),
            "tpot": distribution(tpot),
            "itl": distribution(itl_s, itl_counts),
            "e2e": distribution(e2e),
        },
        "goodput": {
            "slo": {"ttft_s": slo.ttft_s, "tpot_s": slo.tpot_s, "e2e_s": slo.e2e_s},
            "requests_per_s": num_good * per_s,
            "fraction_of_finished": num_good / num_finished if num_finished else None,
        },
        "utilization": {
            "mfu": _ratio(steps.flops, gpu_seconds * shape.peak_flops),
            "memory_bandwidth_utilization": _ratio(steps.bytes, gpu_seconds * shape.memory_bandwidth),
            "busy_fraction": _ratio(busy_gpu, gpu_seconds),
            "mfu_while_busy": _ratio(steps.flops, busy_gpu * shape.peak_flops),
            "memory_bandwidth_utilization_while_busy": _ratio(
                steps.bytes, busy_gpu * shape.memory_bandwidth
            ),
            "compute_bound_time_share": _ratio(steps.compute_bound_s, busy_gpu),
            "memory_bound_time_share": _ratio(steps.memory_bound_s, busy_gpu),
            "latency_bound_time_share": _ratio(steps.other_bound_s, busy_gpu),
            "cpu_overhead_share_of_step_time": _ratio(steps.overhead_s, steps.busy_s),
        },
        "gpu_time_share_by_operator": op_shares,
        "kv_cache": {
            "usage_mean": _ratio(steps.kv_usage_time_integral, steps.busy_s),
            "usage_max": steps.kv_usage_max,
            # Cached / prompt tokens of finished requests, at their first scheduling (a
            # recomputation after preemption is not a new lookup; vLLM's metric counts it).
            "prefix_cache_hit_rate": _ratio(float(cached.sum()), float(prompt.sum())),
            # The same lookups for every request admitted, finished or not.
            "prefix_cache_queries_tokens": steps.prefix_cache_queries_tokens,
            "prefix_cache_hits_tokens": steps.prefix_cache_hits_tokens,
            "evicted_blocks": recorder.num_evicted_blocks,  # cached blocks dropped for reuse
        },
        "roofs": {
            "peak_flops_per_gpu": shape.peak_flops,
            "memory_bandwidth_per_gpu": shape.memory_bandwidth,
        },
        "cost_energy": _cost_energy(shape, recorder, duration_s, output_generated, prompt),
        "steps": {
            "count": steps.num_steps,
            "prefill_tokens": steps.prefill_tokens,
            "decode_tokens": steps.decode_tokens,
            "mean_step_s": _ratio(steps.busy_s, steps.num_steps),
            # GPU work per step (kernels + the runtime's), without launch-bound waiting
            "mean_gpu_time_s": _ratio(steps.gpu_time_s, steps.num_steps),
            "mean_cpu_time_s": _ratio(steps.overhead_s, steps.num_steps),
        },
    }


def _cost_energy(
    shape: RunShape, recorder: Recorder, duration_s: float, output_tokens: int, prompt: np.ndarray
) -> dict[str, Any]:
    steps = recorder.steps
    power = PowerModel(
        idle_w=shape.idle_power_w,
        tdp_w=shape.tdp_w,
        peak_flops=shape.peak_flops,
        memory_bandwidth=shape.memory_bandwidth,
    )
    return cost_energy(
        power,
        shape.price_per_hour_usd,
        shape.num_replicas,
        shape.gpus_per_replica,
        duration_s,
        busy_s=steps.busy_s,
        flops=steps.flops,
        bytes_=steps.bytes,
        output_tokens=float(output_tokens),
        total_tokens=float(output_tokens) + float(prompt.sum()),
        steps=_step_columns(recorder),
    )


def _step_columns(recorder: Recorder) -> dict[str, np.ndarray] | None:
    """Per-step FLOPs, bytes and durations read back from the closed steps.parquet, for the
    power model's per-step cap; None when the run wrote no step table."""
    writer = recorder.steps_writer
    if writer is None or not writer.written_path.exists():
        return None
    table = read_columns(writer.written_path, ["flops", "bytes", "duration_s"])
    return {name: table.column(name).to_numpy() for name in table.column_names}


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None
