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
  Scanning the window on the H200 runs (alpha 1.5, run samples only) agrees: residual rms
  44.8 / 30.2 / 16.3 / 15.1 W for windows of 0.2 / 0.5 / 1.0 / 1.5 s (`--window`).
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
import csv
import datetime
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sim.cost.batch import BatchSummary
from sim.errors import SimError, TraceError

WINDOW_S = 1.0  # nvidia-smi power.draw averaging window on Ampere and newer
ALPHA_GRID = np.round(np.arange(1.0, 3.01, 0.05), 2)
CLOCKS_UP = 0.9  # share of boost above which an idle sample counts as static power
STATIC = "static"  # label of the idle samples


@dataclass(frozen=True, slots=True)
class Samples:
    """nvidia-smi rows: Unix time, board power (W), SM clock (MHz)."""

    t: np.ndarray
    power_w: np.ndarray
    sm_clock_mhz: np.ndarray


@dataclass(frozen=True, slots=True)
class StepWork:
    """What the GPU did per logged step: its span (Unix s) and the simulator's FLOPs and bytes."""

    start: np.ndarray
    end: np.ndarray
    flops: np.ndarray
    bytes: np.ndarray


@dataclass(frozen=True, slots=True)
class FitRows:
    """One row per usable sample: measured power, window-mean clock, window work rates."""

    run: np.ndarray  # run name, or STATIC
    power_w: np.ndarray
    clock_mhz: np.ndarray
    flops_per_s: np.ndarray
    bytes_per_s: np.ndarray


def read_smi(path: Path) -> Samples:
    """nvidia-smi CSV (`timestamp, power.draw [W], clocks.current.sm [MHz], ...`), UTC times."""
    rows = []
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        try:
            ip, ic = header.index("power.draw [W]"), header.index("clocks.current.sm [MHz]")
        except ValueError:
            raise TraceError(f"{path}:1: needs columns power.draw [W] and clocks.current.sm [MHz]") from None
        for line, r in enumerate(reader, start=2):
            try:
                stamp = datetime.datetime.strptime(r[0].strip(), "%Y/%m/%d %H:%M:%S.%f")
                t = stamp.replace(tzinfo=datetime.timezone.utc).timestamp()
                rows.append((t, float(r[ip]), float(r[ic])))
            except (ValueError, IndexError):
                raise TraceError(f"{path}:{line}: unreadable nvidia-smi row") from None
    a = np.array(rows, dtype=np.float64).reshape(-1, 3)
    return Samples(a[:, 0], a[:, 1], a[:, 2])


def read_runs(path: Path) -> list[tuple[str, float, float]]:
    """(name, t_start, t_end) of each run in meta.json."""
    runs = json.loads(path.read_text())["runs"]
    return [(r["run"], float(r["t_start"]), float(r["t_start"]) + float(r["wall"])) for r in runs]


def read_step_log(path: Path) -> tuple[list[BatchSummary], np.ndarray, np.ndarray]:
    """vLLM's per-step log: the batch of each step, its `t_sched_end` and `t_update`."""
    batches, sched_end, update = [], [], []
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            prefill = int(r["prefill_tokens"])
            batches.append(
                BatchSummary(
                    num_prefill_tokens=prefill,
                    num_prefill_seqs=int(r["num_prefill"]),
                    prefill_attn_pairs=float(r["prefill_pairs"]),
                    prefill_kv_tokens=int(r["prefill_ctx_sum"]) + prefill,
                    num_decode_seqs=int(r["num_decode"]),
                    decode_context_tokens=int(r["decode_ctx_sum"]),
                )
            )
            sched_end.append(float(r["t_sched_end"]))
            update.append(float(r["t_update"]))
    return batches, np.array(sched_end), np.array(update)


def step_work(cost_model: Any, batches: Sequence[BatchSummary], sched_end: np.ndarray, update: np.ndarray) -> StepWork:
    """Each step's GPU span and its FLOPs and bytes as `cost_model.step_cost` counts them."""
    costs = [cost_model.step_cost(b) for b in batches]
    order = np.argsort(update, kind="stable")
    end = update[order]
    start = np.maximum(sched_end[order], np.r_[-np.inf, end[:-1]])
    flops = np.array([c.flops for c in costs])[order]
    nbytes = np.array([c.bytes for c in costs])[order]
    return StepWork(start, end, flops, nbytes)


def token_steps(cost_model: Any, requests: Path, t_start: float) -> StepWork | None:
    """The steps of a run that served one request at a time, rebuilt from the client's token
    times (`requests_<run>.jsonl`: send, prompt, output, tok, seconds from `t_start`): a
    prefill ending at the first token, then one decode per further token. None when requests
    overlapped (their steps cannot be told apart)."""
    reqs = sorted((json.loads(line) for line in requests.read_text().splitlines() if line.strip()),
                  key=lambda r: r["send"])
    if any(b["send"] < a["tok"][-1] for a, b in zip(reqs, reqs[1:])):
        return None
    batches, ends, sends = [], [], {}
    for r in reqs:
        p = int(r["prompt"])
        sends[len(ends)] = t_start + r["send"]
        batches.append(BatchSummary(num_prefill_tokens=p, num_prefill_seqs=1,
                                    prefill_attn_pairs=p * (p + 1) / 2, prefill_kv_tokens=p))
        ends.append(t_start + r["tok"][0])
        for i, t in enumerate(r["tok"][1:]):
            batches.append(BatchSummary(num_decode_seqs=1, decode_context_tokens=p + i + 1))
            ends.append(t_start + t)
    end = np.array(ends)
    start = np.r_[end[0], end[:-1]]
    for i, t in sends.items():  # a prefill starts when its request was sent
        start[i] = t
    costs = [cost_model.step_cost(b) for b in batches]
    return StepWork(start, end, np.array([c.flops for c in costs]), np.array([c.bytes for c in costs]))


def cumulative(t: np.ndarray, work: StepWork, amounts: np.ndarray) -> np.ndarray:
    """Work done by time t, each step's amount spread evenly over its span."""
    done = np.r_[0.0, np.cumsum(amounts)]
    i = np.searchsorted(work.end, t, side="right")  # steps finished by t
    j = np.minimum(i, len(amounts) - 1)
    span = np.maximum(work.end[j] - work.start[j], 1e-9)
    partial = np.where(i < len(amounts), amounts[j] * np.clip((t - work.start[j]) / span, 0.0, 1.0), 0.0)
    return done[i] + partial


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
