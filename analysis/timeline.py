"""A run's steps and requests binned over simulated time, for the dashboard.

A step that crosses a bin edge is split between the bins by the share of its time in each.
Rates are per second of simulated time; utilisations are averaged over the replicas (all GPUs
of a TP group step together, so a replica's figure is each of its GPUs').
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.runs import Run, step_power_w

STEP_COLUMNS = [
    "start_s", "duration_s", "gpu_time_s", "num_prefill_tokens", "num_decode_seqs",
    "num_running", "num_waiting", "kv_usage", "flops", "bytes",
]  # fmt: skip


@dataclass
class Binned:
    t_s: np.ndarray  # bin starts
    width_s: float
    arrivals_per_s: np.ndarray
    finished_per_s: np.ndarray
    prefill_tokens_per_s: np.ndarray
    decode_tokens_per_s: np.ndarray
    running: np.ndarray  # step-time-weighted mean of requests in the batch, per replica
    waiting: np.ndarray
    kv_usage: np.ndarray
    busy: np.ndarray  # fraction of the bin the GPUs ran kernels (CPU overhead excluded)
    mfu: np.ndarray
    bandwidth_util: np.ndarray
    power_w: np.ndarray | None  # mean per GPU; None when the run has no power model


def bin_run(run: Run, num_bins: int = 200, width_s: float | None = None) -> Binned:
    steps = run.steps(STEP_COLUMNS)
    requests = run.requests(["arrival_s", "finish_s"])
    start = float(np.nanmin(requests["arrival_s"])) if requests["arrival_s"].size else 0.0
    end = float(np.nanmax(steps["start_s"] + steps["duration_s"])) if steps["start_s"].size else 1.0
    width = width_s or _nice_width((end - start) / num_bins)
    edges = np.arange(start, end + width, width)
    replicas = run.num_replicas
    per_bin = width * replicas  # replica-seconds in a bin

    def total(weights: np.ndarray) -> np.ndarray:
        return apportion(steps["start_s"], steps["duration_s"], weights, edges)

    busy_s = total(steps["duration_s"])  # steps, CPU overhead included
    gpu_s = total(steps["gpu_time_s"])  # kernels only: what nvidia-smi's utilisation counts
    peak_flops, bandwidth = run.roofs()
    power = None
    model = (run.summary.get("cost_energy") or {}).get("power_model")
    if model:
        step_j = step_power_w(steps, model) * steps["duration_s"]
        power = (total(step_j) + model["idle_w"] * np.maximum(per_bin - busy_s, 0.0)) / per_bin
    finish = requests["finish_s"]
    return Binned(
        t_s=edges[:-1],
        width_s=width,
        arrivals_per_s=np.histogram(requests["arrival_s"], bins=edges)[0] / width,
        finished_per_s=np.histogram(finish[np.isfinite(finish)], bins=edges)[0] / width,
        prefill_tokens_per_s=total(steps["num_prefill_tokens"].astype(float)) / width,
        decode_tokens_per_s=total(steps["num_decode_seqs"].astype(float)) / width,
        running=_weighted_mean(total, steps["num_running"], steps["duration_s"], busy_s),
        waiting=_weighted_mean(total, steps["num_waiting"], steps["duration_s"], busy_s),
        kv_usage=_weighted_mean(total, steps["kv_usage"], steps["duration_s"], busy_s),
        busy=gpu_s / per_bin,
        mfu=total(steps["flops"]) / (per_bin * peak_flops),
        bandwidth_util=total(steps["bytes"]) / (per_bin * bandwidth),
        power_w=power,
    )


def apportion(start: np.ndarray, duration: np.ndarray, weights: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Sum `weights` of steps into bins, each step split by the share of its time in a bin."""
    end = start + duration
    first = np.clip(np.searchsorted(edges, start, side="right") - 1, 0, len(edges) - 2)
    last = np.clip(np.searchsorted(edges, end, side="left") - 1, 0, len(edges) - 2)
    inside = first >= last
    sums = np.bincount(first[inside], weights=weights[inside], minlength=len(edges) - 1)
    for i in np.flatnonzero(~inside):  # steps crossing a bin edge: few when bins >> steps
        bins = np.arange(first[i], last[i] + 1)
        overlap = np.minimum(end[i], edges[bins + 1]) - np.maximum(start[i], edges[bins])
        sums[bins] += weights[i] * overlap / duration[i]
    return sums


def _weighted_mean(total, values: np.ndarray, weights: np.ndarray, norm: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, total(values.astype(float) * weights) / norm, np.nan)


def _nice_width(raw: float) -> float:
    """Round a bin width up to 1, 2 or 5 times a power of ten."""
    if raw <= 0:
        return 1.0
    exp = np.floor(np.log10(raw))
    for m in (1.0, 2.0, 5.0, 10.0):
        if raw <= m * 10**exp:
            return float(m * 10**exp)
    return float(10 ** (exp + 1))
