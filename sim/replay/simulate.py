"""Replay a measured run through the normal simulation: its arrivals and lengths as a trace.

The config is composed as `python -m sim` composes it (`sim.sweep.probe.compose_config`): the
engine settings become overrides, the user's own `key=value` overrides come last, and the
workload is the run itself, written to `replayed_requests.csv` and replayed with
`arrival: trace`. Then `sim.run.simulate` writes its usual outputs into `sim/`.

The trace replay puts the first request at t = 0; every simulated time is shifted back by the
run's first send, so the replay keeps the measured send times (latencies do not depend on the
shift; the comparison file records arrivals on the run's own clock).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow.parquet as pq
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from sim.config.build import build_run_spec, resolved_config
from sim.errors import ConfigError
from sim.replay.client_limit import ClientLimit
from sim.replay.compare import Side, distribution, throughput
from sim.replay.measured import MeasuredRun
from sim.run import simulate
from sim.sweep.probe import compose_config

TRACE_FILE = "replayed_requests.csv"
SIM_DIR = "sim"
SEEDS_DIR = "sim_seeds"  # a small run's other seeds
REQUEST_COLUMNS = ["status", "arrival_s", "finish_s", "output_tokens_generated", "ttft_s", "tpot_s", "e2e_s"]


@dataclass(frozen=True, slots=True)
class Simulated:
    side: Side
    summary: dict[str, Any]
    requests: dict[str, np.ndarray]  # finished requests: ttft_s, tpot_s, e2e_s (for the CDFs)
    num_rejected: int
    num_unfinished: int
    sim_dir: Path


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def compose(settings_overrides: Sequence[str], user_overrides: Sequence[str]) -> DictConfig:
    """The composed config; a user override replaces a setting of the same key."""
    user_keys = {override_key(o) for o in user_overrides}
    overrides = [o for o in settings_overrides if override_key(o) not in user_keys]
    overrides += ["workload=azure_conv", *user_overrides]  # a trace workload, repointed below
    try:
        return compose_config(overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot compose the config from {' '.join(overrides)}: {first}") from None


def write_trace(run: MeasuredRun, path: Path, due_s: np.ndarray | None = None) -> None:
    """The requests as the simulator's generic CSV trace, in send order; each arrives at its
    send time, or at `due_s` (a concurrency-limited run, sim.replay.client_limit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    times = run.send_s if due_s is None else due_s
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["arrival_s", "prompt_tokens", "output_tokens"])
        for t, p, o in zip(times.tolist(), run.prompt_tokens.tolist(), run.output_tokens.tolist()):
            out.writerow([repr(t), p, o])


def replay_config(cfg: DictConfig, run: MeasuredRun, trace_path: Path,
                  max_concurrency: int | None = None) -> DictConfig:  # fmt: skip
    """Point the composed config's workload at the run, quietly."""
    w = cfg.workload
    try:
        w.max_concurrency = max_concurrency
        w.name = f"replay_{run.name}"
        w.arrival = "trace"
        w.trace = str(trace_path)
        w.trace_format = "csv"
        w.columns.arrival = "arrival_s"
        w.columns.arrival_unit = "s"
        w.columns.prompt_tokens = "prompt_tokens"
        w.columns.output_tokens = "output_tokens"
        w.columns.prefix_hashes = None
        for key, value in (("start_s", 0.0), ("end_s", None), ("speedup", 1.0), ("target_rate", None),
                           ("spread_ties_s", 0.0), ("num_requests", None), ("duration_s", None)):
            w[key] = value
        cfg.scenario_name = f"replay_{run.name}"
        cfg.question = f"Does the simulator reproduce the measured run {run.name}?"
        cfg.output.print_summary = False
        cfg.output.progress = False
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot set up the replay workload: {exc}") from None
    return cfg


def run_simulation(cfg: DictConfig, run: MeasuredRun, out_dir: Path, limit: ClientLimit | None = None,
                   num_seeds: int = 1) -> list[Simulated]:  # fmt: skip
    """Simulate the run with `num_seeds` seeds from the config's own, the first into
    `out_dir/sim`, the others into `out_dir/sim_seeds/seed_<seed>`, and read the outputs back.
    Under `limit` the requests arrive when due and the simulated client keeps its limit on
    requests in flight."""
    trace_path = out_dir / TRACE_FILE
    write_trace(run, trace_path, None if limit is None else limit.due_s)
    cfg = replay_config(cfg, run, trace_path.resolve(), None if limit is None else limit.max_concurrency)
    spec = build_run_spec(cfg)
    base_seed = spec.seed
    out = []
    for seed in range(base_seed, base_seed + num_seeds):
        cfg.seed = seed
        sim_dir = out_dir / SIM_DIR if seed == base_seed else out_dir / SEEDS_DIR / f"seed_{seed}"
        sim_dir.mkdir(parents=True, exist_ok=True)
        simulate(dataclasses.replace(spec, seed=seed), sim_dir, resolved_config(cfg))
        out.append(read_simulated(sim_dir, offset_s=float(run.send_s.min())))
    return out


def read_simulated(sim_dir: Path, offset_s: float = 0.0) -> Simulated:
    """requests.parquet and summary.json of a simulated run, as one side of the comparison."""
    table = pq.read_table(sim_dir / "requests.parquet", columns=REQUEST_COLUMNS).to_pydict()
    summary = json.loads((sim_dir / "summary.json").read_text())
    status = np.asarray(table["status"], dtype=object)
    finished = status == "finished"
    arrival = np.asarray(table["arrival_s"], dtype=np.float64) + offset_s
    finish = np.where(finished, np.asarray(table["finish_s"], dtype=np.float64) + offset_s, np.nan)
    output = np.asarray(table["output_tokens_generated"], dtype=np.int64)
    done = {k: np.asarray(table[k], dtype=np.float64)[finished] for k in ("ttft_s", "tpot_s", "e2e_s")}
    tok_s, req_s = throughput(arrival, finish, output) if arrival.size else (0.0, 0.0)
    itl = summary["latency_s"]["itl"]
    side = Side(
        num_requests=int(finished.sum()),
        output_tokens_per_s=tok_s,
        requests_per_s=req_s,
        latency={
            "ttft": distribution(done["ttft_s"]),
            "tpot": distribution(done["tpot_s"]),
            "itl": {k: itl.get(k) for k in ("mean", "p50", "p90", "p99")},
            "e2e": distribution(done["e2e_s"]),
        },
    )
    return Simulated(
        side=side,
        summary=summary,
        requests=done,
        num_rejected=int((status == "rejected").sum()),
        num_unfinished=int((status == "unfinished").sum()),
        sim_dir=sim_dir,
    )


def measured_side(run: MeasuredRun) -> Side:
    tok_s, req_s = throughput(run.send_s, run.send_s + run.e2e_s, run.output_tokens)
    return Side(
        num_requests=run.num_requests,
        output_tokens_per_s=tok_s if run.has_e2e else None,
        requests_per_s=req_s if run.has_e2e else None,
        latency={
            "ttft": distribution(run.ttft_s),
            "tpot": distribution(run.tpot_s),
            "itl": distribution(run.itl_s),
            "e2e": distribution(run.e2e_s),
        },
    )
