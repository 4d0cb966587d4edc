"""Fit the engine-time coefficients (sim.cost.engine_costs) to a real vLLM step log.

    python -m sim.calibrate engine DIR [DIR ...] --hardware h200 [--out PATH]

Each DIR holds a vLLM step log and its runs' request files (sim.calibrate.step_log). The
fit follows vLLM's engine-core loop (sim.core.engine_clock): in the iteration that schedules
step k, the CPU runs schedule(k), launches step k, waits for step k-1's GPU work, and applies
step k-1 (`t_update[k-1]`). So:

1. schedule(): measured directly (`t_sched_end - t_sched_start`); least squares on the number
   of scheduled requests.
2. update_from_output() and the loop's own work: measured directly, from step k-1's update to
   the next schedule (`t_sched_start[k+1] - t_update[k-1]`); least squares on step k-1's
   requests.
3. The launch of step k, by CUDA-graph mode: `t_update[k-1] - t_sched_end[k]` is the launch
   plus any wait for the GPU, so it is read where the GPU cannot be the cause: a FULL-graph
   decode right after an eager step whose launch outlasted its GPU work (the GPU is idle), and
   PIECEWISE / eager steps after a short decode step (the launch outlasts the GPU's remaining
   work). Per mode, the median, so that the rare stall does not move it. No per-request
   term is fitted: the mixed steps the log can read this way hold 5 to 14 requests, too few
   to extrapolate to a step of a hundred (a robust slope fitted on them predicts a 50 ms
   launch there and a saturated engine at 26 req/s, which vLLM is not).
4. The runtime's GPU work beyond the priced kernels: where the CPU demonstrably waited for the
   GPU (decode-only steps in a row, the CPU idle for at least `GPU_BOUND_WAIT_S` before the
   update), consecutive updates are one GPU step apart; a robust (soft-L1) least squares of
   that gap minus the cost model's kernel time on [1, decodes].
5. The request's way in and its first token's way out, from the request files matched to the
   steps that ran their prefill: way out = first token at the client - end of that step's
   update (least squares on the step's outputs); way in = the latency most consistent with
   each request being scheduled at the first iteration boundary after it reached the engine.

Every figure comes with its fit error; nothing is tuned to an end-to-end result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from sim.calibrate.step_log import RunRequests, StepLog
from sim.cost.batch import BatchSummary
from sim.cost.engine_costs import (
    CUDAGRAPH_FULL,
    CUDAGRAPH_NONE,
    CUDAGRAPH_PIECEWISE,
    EngineCosts,
    cudagraph_mode,
)
from sim.errors import SimError

GPU_BOUND_WAIT_S = 0.0005  # the CPU waited this long for the GPU: the step was GPU-bound
SHORT_DECODE_S = 0.006  # a previous decode step shorter than this cannot hide a long launch
MIN_SAMPLES = 5


class FitError(SimError):
    """The data cannot support the fit."""


@dataclass(frozen=True)
class Fitted:
    costs: EngineCosts
    report: dict[str, str]


def kernel_times(log: StepLog, cost_model) -> np.ndarray:
    """The cost model's GPU kernel time for every logged batch."""
    out = np.empty(len(log))
    for i in range(len(log)):
        batch = BatchSummary(
            num_prefill_tokens=int(log["prefill_tokens"][i]),
            num_prefill_seqs=int(log["num_prefill"][i]),
            prefill_attn_pairs=float(log["prefill_pairs"][i]),
            prefill_kv_tokens=int(log["prefill_ctx_sum"][i] + log["prefill_tokens"][i]),
            num_decode_seqs=int(log["num_decode"][i]),
            decode_context_tokens=int(log["decode_ctx_sum"][i]),
        )
        out[i] = cost_model.step_cost(batch).gpu_time_s
    return out


def _ols(x: np.ndarray, y: np.ndarray, what: str) -> tuple[np.ndarray, float]:
    """y ~ c0 + c1 x, robust (soft-L1 on the relative residual: a rare stall of the process
    must not move a per-step cost), coefficients >= 0."""
    if len(y) < MIN_SAMPLES:
        raise FitError(f"too few steps to fit {what} ({len(y)}); log more steps")
    design = np.c_[np.ones(len(y)), x]
    scale = np.maximum(np.abs(y), 1e-6)
    start = np.array([float(np.median(y)), 0.0])
    coef = least_squares(lambda c: (design @ c - y) / scale, start, bounds=(0.0, np.inf),
                         loss="soft_l1", f_scale=0.1).x  # fmt: skip
    err = float(np.median(np.abs(design @ coef - y) / np.maximum(np.abs(y), 1e-9)))
    return coef, err


def fit_engine(log: StepLog, runs: list[RunRequests], kernel_s: np.ndarray, capture_size: int,
               source: str, num_layers: int = 0) -> Fitted:  # fmt: skip
    t0, t1, tu = log["t_sched_start"], log["t_sched_end"], log["t_update"]
    nd, npf, pt = log["num_decode"], log["num_prefill"], log["prefill_tokens"]
    nreq = nd + npf
    n = len(log)
    modes = np.array(
        [cudagraph_mode(int(pt[i] + nd[i]), int(nreq[i]), int(nd[i]), capture_size) for i in range(n)]
    )
    report: dict[str, str] = {}

    sched_coef, sched_err = _ols(nreq, t1 - t0, "schedule()")
    report["schedule"] = f"{len(t0)} steps, median |error| {sched_err:.0%}"
    # update(k-1) and the loop's rest: from t_update[k-1] to t_sched_start[k+1]
    upd = t0[2:] - tu[:-2]
    ok = upd > 0
    upd_coef, upd_err = _ols(nreq[:-2][ok], upd[ok], "update_from_output()")
    report["update"] = f"{ok.sum()} steps, median |error| {upd_err:.0%}"

    wait = np.full(n, np.nan)
    wait[1:] = tu[:-1] - t1[1:]  # launch(k) + any wait for GPU(k-1)
    k = np.arange(2, n)
    after_eager = (modes[k] == CUDAGRAPH_FULL) & (modes[k - 1] == CUDAGRAPH_NONE) & (
        wait[k - 1] > kernel_s[k - 1] + 2 * SHORT_DECODE_S / 3
    ) & (wait[k] > 0)
    after_short = (modes[k - 1] == CUDAGRAPH_FULL) & (kernel_s[k - 1] < SHORT_DECODE_S) & (wait[k] > 0)
    launch = {}
    log_deviations: list[np.ndarray] = []
    for mode, chosen in (
        (CUDAGRAPH_FULL, after_eager),
        (CUDAGRAPH_PIECEWISE, after_short & (modes[k] == CUDAGRAPH_PIECEWISE)),
        (CUDAGRAPH_NONE, after_short & (modes[k] == CUDAGRAPH_NONE)),
    ):
        values = wait[k][chosen]
        if len(values) < MIN_SAMPLES:
            raise FitError(f"too few steps to read the {mode} launch ({len(values)}); log more steps")
        median = float(np.median(values))
        launch[mode] = (median, 0.0)
        spread = float(np.median(np.abs(values - median) / median))
        report[f"launch_{mode}"] = f"median of {len(values)} steps, median |deviation| {spread:.0%}"
        if mode != CUDAGRAPH_FULL:
            log_deviations.append(np.log(values / median))
    # The spread of the launches that can outlast the GPU: a robust sigma of their log
    # (1.4826 x the median absolute deviation is a normal law's sigma).
    launch_log_sigma = 1.4826 * float(np.median(np.abs(np.concatenate(log_deviations))))
    report["launch_spread"] = f"log-normal sigma {launch_log_sigma:.2f} (PIECEWISE and eager pooled)"

    # GPU-bound decode-only pairs: the gap between updates is one GPU step
    steady = (pt[k] == 0) & (pt[k - 1] == 0) & (nd[k] > 0) & (wait[k] > GPU_BOUND_WAIT_S)
    j = k[steady]
    gap = tu[j] - tu[j - 1]
    keep = (gap > 0.8 * kernel_s[j]) & (gap < 1.5 * kernel_s[j])  # drop bunched or stalled pairs
    j, gap = j[keep], gap[keep]
    if len(j) < MIN_SAMPLES:
        raise FitError("too few GPU-bound decode steps to fit the runtime's GPU time")
    design = np.c_[np.ones(len(j)), nd[j]]
    resid = gap - kernel_s[j]
    sol = least_squares(lambda c: (design @ c - resid) / gap, np.zeros(2), bounds=(0.0, np.inf),
                        loss="soft_l1", f_scale=0.02)  # fmt: skip
    gpu_step, gpu_per_decode = (float(v) for v in sol.x)
    before = float(np.median(np.abs(resid) / gap))
    after = float(np.median(np.abs(resid - design @ sol.x) / gap))
    report["runtime_gpu"] = (
        f"{len(j)} GPU-bound decode steps: step time median |error| {before:.1%} with the"
        f" kernels alone, {after:.1%} with the runtime's GPU time"
    )

    input_s, output_s, output_per_req_s, io_note = _fit_io(log, runs, modes, upd_coef)
    report["input_output"] = io_note
    costs = EngineCosts(
        schedule_s=float(sched_coef[0]), schedule_per_req_s=float(sched_coef[1]),
        launch_full_s=float(launch[CUDAGRAPH_FULL][0]),
        launch_full_per_req_s=float(launch[CUDAGRAPH_FULL][1]),
        launch_piecewise_s=float(launch[CUDAGRAPH_PIECEWISE][0]),
        launch_piecewise_per_req_s=float(launch[CUDAGRAPH_PIECEWISE][1]),
        launch_eager_s=float(launch[CUDAGRAPH_NONE][0]),
        launch_eager_per_req_s=float(launch[CUDAGRAPH_NONE][1]),
        update_s=float(upd_coef[0]), update_per_req_s=float(upd_coef[1]),
        gpu_step_s=gpu_step, gpu_per_decode_s=gpu_per_decode,
        input_s=input_s, output_s=output_s, output_per_req_s=output_per_req_s,
        fitted_num_layers=num_layers, launch_log_sigma=launch_log_sigma, source=source, fit_error="; ".join(f"{k}: {v}" for k, v in report.items()),
    )  # fmt: skip
    return Fitted(costs, report)


def _single_chunk_prefills(log: StepLog, run: RunRequests) -> list[tuple[int, int]]:
    """(request index, step) for requests whose whole prompt ran in one step: the earliest
    unused `0:prompt` chunk scheduled after the request was sent (sends in time order)."""
    steps = np.where(log.run == run.name)[0]
    starts: dict[int, list[int]] = {}  # prompt length -> steps with a 0:prompt chunk, in order
    for i in steps:
        for part in log.chunks[i].split("|") if log.chunks[i] else ():
            p, q = (int(v) for v in part.split(":"))
            if p == 0:
                starts.setdefault(q, []).append(int(i))
    t0 = log["t_sched_start"]
    matched = []
    for r in np.argsort(run.send, kind="stable"):
        candidates = starts.get(int(run.prompt[r]), [])
        send = run.t_start + run.send[r]
        while candidates and t0[candidates[0]] < send:
            candidates.pop(0)
        if candidates:
            matched.append((int(r), candidates.pop(0)))
    return matched


def _fit_io(log: StepLog, runs: list[RunRequests], modes: np.ndarray,
            upd_coef: np.ndarray) -> tuple[float, float, float, str]:  # fmt: skip
    t0, tu = log["t_sched_start"], log["t_update"]
    nd, npf = log["num_decode"], log["num_prefill"]
    outs, way_out, lo, hi = [], [], [], []
    for run in runs:
        for r, first in _single_chunk_prefills(log, run):
            last = first
            update_end = tu[last] + upd_coef[0] + upd_coef[1] * (nd[last] + npf[last])
            delay = run.t_start + run.first_token[r] - update_end
            if 0.0 < delay < 0.05:
                outs.append(nd[last] + npf[last])
                way_out.append(delay)
            if first > 0 and log.run[first - 1] == run.name:
                send = run.t_start + run.send[r]
                lo.append(t0[first - 1] - send)
                hi.append(t0[first] - send)
    if len(way_out) < MIN_SAMPLES:
        raise FitError("too few requests matched to the step log to fit the way in and out")
    coef, err = _ols(np.array(outs), np.array(way_out), "the output path")
    lo_a, hi_a = np.array(lo), np.array(hi)
    grid = np.linspace(0.0, 0.01, 201)
    consistent = [(np.sum((lo_a < c) & (c <= hi_a)), c) for c in grid]
    best = max(consistent)[0]
    input_s = float(np.median([c for count, c in consistent if count == best]))
    note = (
        f"{len(way_out)} first tokens: way out median |error| {err:.0%}; way in"
        f" {input_s * 1e3:.2f} ms, consistent with {best} of {len(lo_a)} requests' scheduling"
    )
    return input_s, float(coef[0]), float(coef[1]), note
