"""Fit engine time to replayed runs when no step log exists (only what a client measured).

    python -m sim.calibrate engine --replay RUN [RUN ...] --hardware h200 [--model llama3_8b]

RUN: any run `python -m sim.replay` reads (the measurement-set JSONL with its meta.json,
`vllm bench serve --save-detailed` JSON, or a CSV with token times). Without a step log the
parts of the engine's time cannot be told apart, so the fit keeps the shape of a starting
profile (the GPU's own engine profile, else the transferred one) and fits three mechanisms to
what the client saw:

- `cpu_scale`: every CPU cost of the engine-core loop (schedule, launch, update) times one
  factor: a faster or slower host, another vLLM build;
- `gpu_per_decode_s`: the runtime's GPU time per decode sequence;
- `output_s`: the tokens' way out to the client.

The objective is the mean squared log error of TTFT, TPOT and ITL at p50 and p90 over the
runs, minimised by Nelder-Mead over log-parameters; each evaluation replays every run through
the simulator with the candidate profile. The fitted profile states the runs, the residual
error and that it was fitted by replay.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.optimize import minimize

from sim.cost.engine_costs import EngineCosts
from sim.errors import SimError

TARGETS = (("ttft", "p50"), ("ttft", "p90"), ("tpot", "p50"), ("tpot", "p90"), ("itl", "p50"), ("itl", "p90"))
CPU_FIELDS = (
    "schedule_s", "schedule_per_req_s", "launch_full_s", "launch_piecewise_s", "launch_eager_s",
    "launch_full_per_req_s", "launch_piecewise_per_req_s", "launch_eager_per_req_s",
    "update_s", "update_per_req_s",
)  # fmt: skip
FLOOR_S = 1e-6  # parameters are fitted in log space; a zero start is lifted to this
SIMPLEX_STEP = 0.7  # first moves of Nelder-Mead, in log units (x2 either way)


@dataclass(frozen=True)
class ReplayFit:
    costs: EngineCosts
    error_before: float  # root mean squared log error of the targets, starting profile
    error_after: float
    evaluations: int


def candidate(base: EngineCosts, cpu_scale: float, gpu_per_decode_s: float, output_s: float) -> EngineCosts:
    scaled = {name: getattr(base, name) * cpu_scale for name in CPU_FIELDS}
    return replace(base, **scaled, gpu_per_decode_s=gpu_per_decode_s, output_s=output_s)


def log_errors(rows) -> list[float]:
    """Log ratios simulated/measured of the target statistics a replay could compare."""
    out = []
    for row in rows:
        if (row.metric, row.stat) in TARGETS and row.measured and row.simulated:
            out.append(math.log(row.simulated / row.measured))
    return out


def fit_from_replays(
    sources: Sequence, base: EngineCosts, replay_fn, max_evaluations: int = 40
) -> ReplayFit:
    """`replay_fn(source, profile_path, out_dir) -> rows` replays one run with the engine
    profile at `profile_path` and returns its comparison rows (sim.replay.compare.Row)."""
    start = np.log([1.0, max(base.gpu_per_decode_s, FLOOR_S), max(base.output_s, FLOOR_S)])
    evaluations = 0

    with tempfile.TemporaryDirectory() as tmp:
        profile = Path(tmp) / "engine.json"

        def objective(theta: np.ndarray) -> float:
            nonlocal evaluations
            evaluations += 1
            scale, per_decode, out = (float(v) for v in np.exp(theta))
            costs = candidate(base, scale, per_decode, out)
            profile.write_text(json.dumps({"engine": costs.to_dict()}))
            errors: list[float] = []
            for i, source in enumerate(sources):
                errors += log_errors(replay_fn(source, profile, Path(tmp) / f"run{i}_{evaluations}"))
            if not errors:
                raise SimError("the runs measured none of TTFT, TPOT or ITL: nothing to fit to")
            return float(np.mean(np.square(errors)))

        before = objective(start)
        simplex = np.vstack([start, start + SIMPLEX_STEP * np.eye(len(start))])
        simplex[1, 0] = start[0] - SIMPLEX_STEP  # try a faster host first: slow ones saturate
        result = minimize(objective, start, method="Nelder-Mead",
                          options={"maxfev": max_evaluations, "xatol": 0.02, "fatol": 1e-5,
                                   "initial_simplex": simplex})  # fmt: skip
    best = result.x if result.fun <= before else start
    scale, per_decode, out = (float(v) for v in np.exp(best))
    after = min(float(result.fun), before)
    costs = replace(
        candidate(base, scale, per_decode, out),
        source=f"fitted by replay (sim.calibrate.engine_replay) to {len(sources)} run(s), starting"
        f" from: {base.source}",
        fit_error=(
            f"TTFT/TPOT/ITL p50 and p90: root mean squared log error {math.sqrt(before):.1%} with"
            f" the starting profile, {math.sqrt(after):.1%} fitted (cpu x{scale:.2f},"
            f" {per_decode * 1e6:.1f} us per decode, way out {out * 1e3:.2f} ms)"
        ),
    )
    return ReplayFit(costs, math.sqrt(before), math.sqrt(after), evaluations)
