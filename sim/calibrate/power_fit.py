"""Fit the board-power model to nvidia-smi samples taken while a real vLLM engine ran.

    python -m sim.calibrate.power_fit --hardware h200 --model llama3_8b \\
        --runs /tmp/vllm/llama3_8b_bf16_s1024_b8192 --check /tmp/vllm/llama3_8b_bf16 \\
        --out sim/data/power/h200.json

A run directory holds `smi.csv` (nvidia-smi every 200 ms: power.draw, clocks.current.sm),
`meta.json` (`runs[].t_start` / `wall`, Unix seconds) and `steps_*.csv`, vLLM's per-step log
(batch composition and `t_sched_end` / `t_update`, Unix seconds).

The model (`sim.economics`), per sample and GPU:

    P = P_static + e_c (f / f_boost)^(alpha - 1) FLOP/s + e_m bytes/s

FLOPs and bytes are the simulator's own accounting of each logged batch (`sim.cost`), so the
fitted joules per FLOP and per byte mean at prediction time what they meant here. The compute
term is dynamic power at clock f: work per cycle times cycles per second times the energy of a
cycle, C V(f)^2; per FLOP that is f^(alpha-1) for P_dyn ~ f^alpha at fixed work per cycle.
HBM runs at a fixed clock (3201 MHz in every sample), so the memory term has no clock factor.

Alignment:
- With async scheduling step k runs on the GPU from max(its `t_sched_end`, step k-1's
  `t_update`) to its own `t_update`; its FLOPs and bytes are spread evenly over that span.
  Single spans are noisy (updates bunch up), sums over many steps are exact.
- `power.draw` is the board power averaged over the last second on Ampere and newer GPUs
  (NVML `nvmlDeviceGetPowerUsage`: "On Ampere (except GA100) or newer GPUs, the API returns
  power averaged over 1 sec interval"), so each sample is compared with the work rate over the
  second before it, and with the mean of the SM-clock samples (instantaneous) in that second.
  Scanning the window on the H200 runs agrees (`--window`; sample rms error per run, pois_20 /
  off_1k_512 / pois_6): 66 / 70 / 54 W at 0.2 s, 36 / 42 / 31 W at 0.5 s, 17 / 20 / 14 W at
  1 s, 15 / 20 / 14 W at 1.5 s, 15 / 17 / 18 W at 2 s.
- Samples in the first second of a run, and between runs while work was still in the window,
  are dropped. Samples with no work in the window and the SM clock up (>= 90% of boost) are
  the static power: they pin P_static.

Method: ordinary least squares (`numpy.linalg.lstsq`) of P on (1, (f/f_boost)^(alpha-1)
FLOP/s, bytes/s) for each alpha of a grid; alpha is the grid point of least squared error
(profile least squares). Each run is then predicted by a fit to the other runs
(leave-one-run-out), and the per-run mean and rms errors are written with the coefficients.
Runs of `--check` directories that served one request at a time (`b1`) are predicted from
steps rebuilt out of the client's token times, and not fitted.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sim.calibrate.power_data import (
    Samples,
    StepWork,
    cumulative,
    read_runs,
    read_smi,
    read_step_log,
    step_work,
    token_steps,
)
from sim.errors import SimError, TraceError

__all__ = ["Samples", "StepWork", "FitRows", "fit", "fit_rows", "fit_directories", "token_steps"]

WINDOW_S = 1.0  # nvidia-smi power.draw averaging window on Ampere and newer
ALPHA_GRID = np.round(np.arange(1.0, 3.01, 0.05), 2)
CLOCKS_UP = 0.9  # share of boost above which an idle sample counts as static power
STATIC = "static"  # label of the idle samples


@dataclass(frozen=True, slots=True)
class FitRows:
    """One row per usable sample: measured power, window-mean clock, window work rates."""

    run: np.ndarray  # run name, or STATIC
    power_w: np.ndarray
    clock_mhz: np.ndarray
    flops_per_s: np.ndarray
    bytes_per_s: np.ndarray


def fit_rows(samples: Samples, runs: list[tuple[str, float, float]], work: StepWork,
             boost_mhz: float, window_s: float = WINDOW_S) -> FitRows:
    """Line up each sample with the work of the window before it; label it by run."""
    t = samples.t
    flops_rate = (cumulative(t, work, work.flops) - cumulative(t - window_s, work, work.flops)) / window_s
    bytes_rate = (cumulative(t, work, work.bytes) - cumulative(t - window_s, work, work.bytes)) / window_s
    lo = np.searchsorted(t, t - window_s, side="right")
    csum = np.r_[0.0, np.cumsum(samples.sm_clock_mhz)]
    hi = np.arange(1, len(t) + 1)
    clock = (csum[hi] - csum[lo]) / (hi - lo)  # mean of the samples in (t - window, t]
    label = np.full(len(t), "", dtype=object)
    first, last = work.start[0], work.end[-1]
    for name, t0, t1 in runs:
        inside = (t >= t0 + window_s) & (t <= t1) & (t >= first + window_s) & (t <= last)
        label[inside] = name
    # static: no work within the window (and 2 s either side) with the clocks up
    quiet = cumulative(t + 2.0, work, work.flops) == cumulative(t - window_s - 2.0, work, work.flops)
    label[quiet & (label == "") & (clock >= CLOCKS_UP * boost_mhz)] = STATIC
    keep = label != ""
    return FitRows(label[keep].astype(str), samples.power_w[keep], clock[keep],
                   flops_rate[keep], bytes_rate[keep])


def design(rows: FitRows, alpha: float, boost_mhz: float) -> np.ndarray:
    x = rows.clock_mhz / boost_mhz
    return np.column_stack([np.ones_like(x), x ** (alpha - 1.0) * rows.flops_per_s, rows.bytes_per_s])


def least_squares(rows: FitRows, mask: np.ndarray, boost_mhz: float) -> tuple[float, np.ndarray]:
    """(alpha, [P_static, e_c, e_m]) of least squared error over the rows in `mask`."""
    best = None
    for alpha in ALPHA_GRID:
        a = design(rows, alpha, boost_mhz)[mask]
        scale = np.abs(a).max(axis=0)  # columns span 1 .. 1e15: scale for a stable solve
        coef, *_ = np.linalg.lstsq(a / scale, rows.power_w[mask], rcond=None)
        coef = coef / scale
        sse = float(((rows.power_w[mask] - a @ coef) ** 2).sum())
        if best is None or sse < best[0]:
            best = (sse, float(alpha), coef)
    assert best is not None
    return best[1], best[2]


def run_errors(rows: FitRows, alpha: float, coef: np.ndarray, boost_mhz: float) -> dict[str, dict[str, float]]:
    """Per run: measured and predicted mean power, mean error, rms error (W)."""
    pred = design(rows, alpha, boost_mhz) @ coef
    out = {}
    for name in dict.fromkeys(rows.run):
        k = rows.run == name
        err = pred[k] - rows.power_w[k]
        out[name] = {"samples": int(k.sum()), "measured_mean_w": float(rows.power_w[k].mean()),
                     "predicted_mean_w": float(pred[k].mean()), "mean_error_w": float(err.mean()),
                     "rms_error_w": float(np.sqrt((err**2).mean()))}
    return out


def fit(rows: FitRows, boost_mhz: float) -> dict[str, Any]:
    """Coefficients on every row, and each run predicted by a fit without it."""
    alpha, coef = least_squares(rows, np.ones(len(rows.run), dtype=bool), boost_mhz)
    held_out = {}
    for name in dict.fromkeys(rows.run):
        if name == STATIC:
            continue
        a, c = least_squares(rows, rows.run != name, boost_mhz)
        held_out[name] = {**run_errors(rows, a, c, boost_mhz)[name], "alpha": a}
    return {
        "static_w": float(coef[0]),
        "compute_j_per_flop": float(coef[1]),
        "memory_j_per_byte": float(coef[2]),
        "clock_exponent": alpha,
        "fit": run_errors(rows, alpha, coef, boost_mhz),
        "held_out": held_out,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hardware", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--runs", nargs="+", type=Path, required=True, help="directories with smi.csv, meta.json, steps_*.csv")
    p.add_argument("--check", nargs="*", type=Path, default=[],
                   help="directories whose one-request-at-a-time runs are predicted, not fitted")
    p.add_argument("--window", type=float, default=WINDOW_S)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    try:
        result = fit_directories(args.hardware, args.model, args.runs, args.window, args.check)
    except SimError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}")
    for name, e in result["fit"].items():
        h = result["held_out"].get(name)
        cv = f"  held out: {h['mean_error_w']:+6.1f} W mean, {h['rms_error_w']:5.1f} W rms" if h else ""
        print(f"{name:12s} {e['measured_mean_w']:6.1f} W measured, {e['mean_error_w']:+6.1f} W mean error,"
              f" {e['rms_error_w']:5.1f} W rms{cv}")
    for name, e in result["checked"].items():
        print(f"{name:12s} {e['measured_mean_w']:6.1f} W measured, {e['mean_error_w']:+6.1f} W mean error"
              f" (not fitted: steps from token times)")
    print(f"static {result['static_w']:.1f} W, {result['compute_j_per_flop'] * 1e12:.3f} pJ/FLOP, "
          f"{result['memory_j_per_byte'] * 1e12:.1f} pJ/byte, alpha {result['clock_exponent']}")
    return 0


def fit_directories(hardware: str, model: str, dirs: Sequence[Path], window_s: float = WINDOW_S,
                    check_dirs: Sequence[Path] = ()) -> dict[str, Any]:
    """Everything `main` writes: the fit over the runs of `dirs`, with its inputs named, and
    the runs of `check_dirs` that served one request at a time, predicted and not fitted."""
    from sim.step import build_step_cost_model

    cost_model = build_step_cost_model([f"model={model}", f"hardware={hardware}"])
    boost = cost_model.hardware.boost_clock_mhz
    if boost <= 0:
        raise SimError(f"hardware {hardware} has no boost_clock_mhz: the clock factor needs it")
    parts, sources = [], []
    for d in dirs:
        logs = sorted(d.glob("steps_*.csv"))
        for need in (d / "smi.csv", d / "meta.json"):
            if not need.is_file():
                raise TraceError(f"{need}: missing (a run directory needs smi.csv, meta.json, steps_*.csv)")
        if not logs:
            raise TraceError(f"{d}: no steps_*.csv step log to line power up with")
        batches, sched_end, update = read_step_log(logs[0])
        work = step_work(cost_model, batches, sched_end, update)
        parts.append(fit_rows(read_smi(d / "smi.csv"), read_runs(d / "meta.json"), work, boost, window_s))
        sources.append({"dir": d.name, "step_log": logs[0].name, "runs": [r[0] for r in read_runs(d / "meta.json")]})
    rows = FitRows(*(np.concatenate([getattr(r, f) for r in parts]) for f in FitRows.__slots__))
    checks = [_token_rows(cost_model, d, boost, window_s) for d in check_dirs]
    checks = [c for c in checks if c is not None]
    # deep idle: samples with the SM clock parked (345 MHz on the H200) before the engine starts
    deep = [s.power_w[s.sm_clock_mhz <= 0.25 * boost] for s in (read_smi(d / "smi.csv") for d in dirs)]
    deep_idle = np.concatenate(deep)
    result = fit(rows, boost)
    peak, bw = cost_model.hardware.peak_flops["bf16"], cost_model.hardware.memory_bandwidth
    dynamic = cost_model.hardware.tdp_w - result["static_w"]
    return {
        "hardware": hardware,
        "model": model,
        "boost_clock_mhz": boost,
        "power_limit_w": cost_model.hardware.tdp_w,
        "deep_idle_w": float(np.median(deep_idle)) if deep_idle.size else None,
        **{k: result[k] for k in ("static_w", "compute_j_per_flop", "memory_j_per_byte", "clock_exponent")},
        # the same coefficients as shares of (TDP - static) at the datasheet bf16 peak and HBM
        # bandwidth: the form sim.economics uses, and what transfers to other GPUs
        "compute_weight": result["compute_j_per_flop"] * peak / dynamic,
        "memory_weight": result["memory_j_per_byte"] * bw / dynamic,
        "window_s": window_s,
        "method": "least squares of nvidia-smi power.draw on the simulator's FLOP/s and byte/s over the"
        " 1 s before each sample, clock exponent by profile least squares (sim/calibrate/power_fit.py)",
        "data": sources,
        "checked_data": [d.name for d in check_dirs],
        "fit": result["fit"],
        "held_out": result["held_out"],
        "checked": {
            name: e for c in checks
            for name, e in run_errors(c, result["clock_exponent"], np.array(
                [result["static_w"], result["compute_j_per_flop"], result["memory_j_per_byte"]]), boost).items()
            if name != STATIC
        },
    }


def _token_rows(cost_model: Any, d: Path, boost: float, window_s: float) -> FitRows | None:
    """Sample rows of the one-request-at-a-time runs of `d` (steps from token times)."""
    smi, runs, parts = read_smi(d / "smi.csv"), read_runs(d / "meta.json"), []
    for name, t0, t1 in runs:
        requests = d / f"requests_{name}.jsonl"
        work = token_steps(cost_model, requests, t0) if requests.is_file() else None
        if work is not None:
            rows = fit_rows(smi, [(name, t0, t1)], work, boost, window_s)
            parts.append(rows)
    if not parts:
        return None
    return FitRows(*(np.concatenate([getattr(r, f) for r in parts]) for f in FitRows.__slots__))


if __name__ == "__main__":
    sys.exit(main())
