"""Replay measured vLLM runs with the power cap and compare power, clock and latency with them.

    python -m sim.calibrate.power_check --hardware h200 --model llama3_8b \\
        --runs /tmp/vllm/llama3_8b_bf16 /tmp/vllm/llama3_8b_bf16_s1024_b8192

For every run of each directory's meta.json that has a `requests_<run>.jsonl`, the requests
are replayed at their send times and lengths (prefix caching off, the engine's limits from
meta.json), with the cost model wrapped in `sim.cost.power_cap.PowerCappedCostModel`. Printed
per run: the mean board power over the run (steps at their predicted power, the static power
between them) and the time-weighted mean SM clock, next to nvidia-smi's mean over the same
run, and TTFT / TPOT p50 next to the client's measurements.

With `--step-times DIR` (a directory with smi.csv and a steps_*.csv step log) it tests instead
whether vLLM's compute-bound work slowed with the measured clock beyond what the calibrated
profile holds: per 1-s bin of logged steps, the summed step spans are regressed (least
squares) on the count of steps, the profile's compute-bound time times (boost/f)^beta, with f
the SM clock nvidia-smi sampled nearest each step, and the rest of the profile's GPU time.
beta = 0: the profile's times as they are; beta = 1: compute slowed by the clock in full.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sim.calibrate.power_data import read_runs, read_smi, read_step_log
from sim.cost.power_cap import PowerCappedCostModel


class _Recording(PowerCappedCostModel):
    """The wrapper, noting each engine step's duration, clock and power."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log: list[tuple[float, float, float]] = []

    def step_cost(self, batch):  # type: ignore[no-untyped-def]
        step = self.capped(batch)
        self.log.append((step.cost.time_s, step.clock_mhz, step.power_w))
        return step.cost


def measured_latency(path: Path) -> tuple[float, float]:
    """Client-side TTFT and TPOT p50 (s) of a requests_<run>.jsonl."""
    ttft, tpot = [], []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        ttft.append(r["tok"][0] - r["send"])
        if len(r["tok"]) > 1:
            tpot.append((r["tok"][-1] - r["tok"][0]) / (len(r["tok"]) - 1))
    return statistics.median(ttft), statistics.median(tpot)


def replay(requests: Path, overrides: list[str]) -> tuple[dict[str, Any], _Recording]:
    """One in-process run with the recording wrapper in place of the plain cost model."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import sim.run
    from sim.config.build import build_run_spec, resolved_config
    from sim.config.scenarios import CONFIG_DIR
    from sim.config.schema import register_schemas

    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=[
            "workload.arrival=trace", f"workload.trace={requests}", "workload.trace_format=jsonl",
            "workload.columns.arrival=send", "workload.columns.prompt_tokens=prompt",
            "workload.columns.output_tokens=output", "output.progress=false",
            "output.print_summary=false", "output.write_steps=false", *overrides])
    spec = build_run_spec(cfg)
    made: list[_Recording] = []
    plain = sim.run.build_cost_model

    def wrapped(model, hardware, precision, tp, cost_cfg):  # type: ignore[no-untyped-def]
        inner = plain(model, hardware, precision, tp, cost_cfg)
        made.append(_Recording.from_specs(inner, hardware, hardware.peak_flops[precision.activation_dtype]))
        return made[-1]

    sim.run.build_cost_model = wrapped  # the engine does not wire the wrapper in yet
    try:
        with tempfile.TemporaryDirectory() as out:
            result = sim.run.simulate(spec, Path(out), resolved_config(cfg))
    finally:
        sim.run.build_cost_model = plain
    return result.summary, made[0]


def check(directory: Path, hardware: str, model: str) -> list[dict[str, Any]]:
    meta = json.loads((directory / "meta.json").read_text())
    smi = read_smi(directory / "smi.csv")
    overrides = [f"model={model}", f"hardware={hardware}",
                 f"scheduler.max_num_seqs={meta['scheduler']['max_num_seqs']}",
                 f"scheduler.max_num_batched_tokens={meta['scheduler']['max_num_batched_tokens']}",
                 f"scheduler.num_gpu_blocks_override={meta['cache']['num_gpu_blocks']}",
                 "scheduler.max_model_len=8192", "scheduler.enable_prefix_caching=false"]
    rows = []
    for name, t0, t1 in read_runs(directory / "meta.json"):
        requests = directory / f"requests_{name}.jsonl"
        if not requests.is_file():
            continue
        summary, rec = replay(requests, overrides)
        log = np.array(rec.log).reshape(-1, 3)
        duration = summary["duration_s"]
        busy = log[:, 0].sum()
        idle_s = max(duration - busy, 0.0)
        power = ((log[:, 0] * log[:, 2]).sum() + rec.clock_model.power.idle_w * idle_s) / duration
        clock = ((log[:, 0] * log[:, 1]).sum() + rec.boost_clock_mhz * idle_s) / duration
        inside = (smi.t >= t0) & (smi.t <= t1)
        ttft, tpot = measured_latency(requests)
        lat = summary["latency_s"]
        rows.append({
            "dir": directory.name, "run": name,
            "power_w": power, "measured_power_w": float(smi.power_w[inside].mean()),
            "clock_mhz": clock, "measured_clock_mhz": float(smi.sm_clock_mhz[inside].mean()),
            "ttft_p50_s": lat["ttft"]["p50"], "measured_ttft_p50_s": ttft,
            "tpot_p50_s": lat["tpot"]["p50"], "measured_tpot_p50_s": tpot,
        })
        r = rows[-1]
        print(f"{directory.name:28s} {name:11s} power {r['power_w']:5.0f} W (smi {r['measured_power_w']:5.0f})"
              f"  clock {r['clock_mhz']:5.0f} MHz (smi {r['measured_clock_mhz']:5.0f})"
              f"  TTFT p50 {r['ttft_p50_s'] * 1e3:8.1f} ms (vLLM {ttft * 1e3:8.1f})"
              f"  TPOT p50 {r['tpot_p50_s'] * 1e3:6.1f} ms (vLLM {tpot * 1e3:6.1f})", flush=True)
    return rows


def step_time_regression(directory: Path, hardware: str, model: str,
                         betas: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0)) -> dict[float, float]:
    """Residual rms (s) per 1-s bin of the step-time regression, for each beta."""
    from sim.cost.breakdown import BOUND_COMPUTE
    from sim.step import build_step_cost_model

    cost_model = build_step_cost_model([f"model={model}", f"hardware={hardware}"])
    boost = cost_model.hardware.boost_clock_mhz
    batches, sched_end, update = read_step_log(next(directory.glob("steps_*.csv")))
    costs = [cost_model.step_cost(b) for b in batches]
    compute = np.array([sum(op.time_s for op in c.ops if op.bound == BOUND_COMPUTE) for c in costs])
    other = np.array([c.gpu_time_s for c in costs]) - compute
    order = np.argsort(update, kind="stable")
    end, compute, other = update[order], compute[order], other[order]
    start = np.maximum(sched_end[order], np.r_[-np.inf, end[:-1]])
    span = end - start
    smi = read_smi(directory / "smi.csv")
    clock = np.interp(0.5 * (start + end), smi.t, smi.sm_clock_mhz)
    ok = span < 0.5  # a span over an idle gap is not a step
    bins = np.floor(end - end[0]).astype(int)[ok]
    out = {}
    for beta in betas:
        x = np.column_stack([np.ones(ok.sum()), (compute * (boost / clock) ** beta)[ok], other[ok]])
        xb = np.column_stack([np.bincount(bins, x[:, j]) for j in range(3)])
        yb = np.bincount(bins, span[ok])
        keep = xb[:, 0] > 5  # bins of at least five steps
        coef, *_ = np.linalg.lstsq(xb[keep], yb[keep], rcond=None)
        out[beta] = float(np.sqrt(((yb[keep] - xb[keep] @ coef) ** 2).mean()))
        print(f"beta {beta:4.2f}: residual rms {out[beta] * 1e3:5.1f} ms per 1-s bin,"
              f" compute-time factor {coef[1]:.3f}, other-time factor {coef[2]:.3f}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hardware", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--runs", nargs="+", type=Path, default=[])
    p.add_argument("--step-times", type=Path, help="run the step-time regression on this directory")
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args(argv)
    if args.step_times:
        step_time_regression(args.step_times, args.hardware, args.model)
    rows = [r for d in args.runs for r in check(d, args.hardware, args.model)]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
