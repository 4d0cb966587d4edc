"""One candidate of a plan, evaluated in a worker: capacity per replica under the SLOs (the
capacity search of sim/sweep/capacity.py), the replicas a target rate needs, and what that
deployment costs, at goodput, in dollars and joules. A P/D candidate's replica is one
prefill+decode group (its deployment pools), scaled as a whole.

Runs in a joblib or Ray worker: everything in and out is plain data (a PlanTask in, a dict
row out), and the config is composed in the worker from the overrides.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from omegaconf import DictConfig, open_dict

from sim.config.build import build_run_spec
from sim.cost.roofline import build_cost_model
from sim.errors import SimError
from sim.metrics.report import request_figures
from sim.plan.source import cost_source
from sim.plan.space import Candidate
from sim.sweep.capacity import (
    confirm_seed, replica_counts, search_seed, size_for_target, summarize_seeds, unit_gpus_and_price,
)  # fmt: skip
from sim.sweep.probe import ProbeResult, Slo, compose_config, run_probe, tail, with_rate


@dataclass(frozen=True)
class PlanTask:
    candidate: Candidate
    base_overrides: tuple[str, ...]
    slo: Slo
    e2e_p_s: float | None  # E2E limit at the same percentile; None: no E2E SLO
    target_rate: float
    seeds: tuple[int, ...] = (0,)
    requests: int = 1000
    confirm_factor: float = 2.0
    tol: float = 0.02
    start_rate: float | None = None
    unit: str = "req/s"  # the load sized for: "req/s" (open loop) or "users" (closed loop)

    @property
    def long_requests(self) -> int:
        return int(self.requests * max(self.confirm_factor, 1.0))

    def load(self, value: float) -> float:
        """The load a probe offers for a searched value: users are whole (the bisection's
        midpoints round to the user counts that were run)."""
        return float(max(1, round(value))) if self.unit == "users" else value


@dataclass
class _Probes:
    """Every probe of the search, kept for the Pareto curve."""

    task: PlanTask
    base: tuple[int, ...] = (1,)  # replicas per pool of one unit: its probes draw the curve
    points: list[dict[str, Any]] = field(default_factory=list)
    done: dict[tuple, ProbeResult] = field(default_factory=dict)

    def run(self, cfg: DictConfig, rate: float, seed: int, num_requests: int, slo: Slo) -> ProbeResult:
        """`run_probe`, plus the E2E check and the output tokens of requests within SLO. A load
        already run (users: midpoints that round to the same count) is not run again."""
        rate = self.task.load(rate)
        counts = replica_counts(cfg)
        key = (rate, seed, num_requests, counts)
        if key in self.done:
            return self.done[key]
        with tempfile.TemporaryDirectory(prefix="sim-plan-") as tmp:
            result = run_probe(cfg, rate, seed, num_requests, slo, out_dir=Path(tmp))
            requests_path = Path(tmp) / "requests.parquet"
            figures = request_figures(requests_path, result.summary)
            e2e_ok = True
            if self.task.e2e_p_s is not None:
                e2e_ok = _e2e_tail(requests_path, slo) <= self.task.e2e_p_s
        result.summary["goodput_output_tokens"] = figures.get("goodput_output_tokens", 0)
        result = dataclasses.replace(result, meets=result.meets and e2e_ok)
        if counts == self.base:
            self.points.append(_point(result))
        self.done[key] = result
        return result


def _e2e_tail(requests_path: Path, slo: Slo) -> float:
    t = pq.read_table(requests_path, columns=["status", "arrival_s", "e2e_s"]).to_pydict()
    arrival = np.asarray(t["arrival_s"], dtype=np.float64)
    if arrival.size == 0:
        return 0.0
    kept = arrival >= arrival.min() + slo.warmup_fraction * (arrival.max() - arrival.min())
    finished = np.asarray(t["status"], dtype=object) == "finished"
    e2e = np.where(finished, np.asarray(t["e2e_s"], dtype=np.float64), np.inf)[kept]
    return tail(e2e, slo.quantile)


def _point(result: ProbeResult) -> dict[str, Any]:
    """One point of the candidate's throughput-interactivity curve (one replica)."""
    s = result.summary
    tpot_p50 = s["latency_s"]["tpot"]["p50"]
    return {
        "rate": result.rate,
        "seed": result.seed,
        "output_tokens_per_s_per_gpu": s["throughput"]["output_tokens_per_s_per_gpu"],
        "output_tokens_per_s_per_user": 1.0 / tpot_p50 if tpot_p50 else None,
        "ttft_p99_s": result.ttft_p99_s,
        "tpot_p99_s": result.tpot_p99_s,
        "meets": result.meets,
    }


def compose_candidate(base_overrides: tuple[str, ...] | list[str], cand: Candidate) -> DictConfig:
    """The config of one unit of `cand`: the user's overrides, the candidate's, and its
    deployment pools in place of any the config had (none for a classic candidate: its unit
    is one replica of parallel.*). `deployment.compare` is cleared: a probe runs one setup."""
    cfg = compose_config([*base_overrides, *cand.overrides()])
    with open_dict(cfg):
        cfg.deployment.pools = cand.pools()
        cfg.deployment.compare = {}
        if cand.pd is not None:  # the name the engine's messages give the deployment
            cfg.deployment.name = cfg.deployment.label = f"pd_{cand.pd.prefill}p{cand.pd.decode}d"
    return cfg


def _compose(task: PlanTask) -> tuple[DictConfig, Any]:
    cfg = compose_candidate(task.base_overrides, task.candidate)
    return cfg, build_run_spec(with_rate(cfg, task.start_rate or _start_rate(cfg), 0, task.requests))


def candidate_columns(cand: Candidate) -> dict[str, Any]:
    """What the candidate is, as plan.parquet columns: its engine layout, or its P/D group."""
    pd = cand.pd
    return {
        "candidate": cand.label, "hardware": cand.hardware, "precision": cand.precision,
        "tp": None if pd else cand.tp, "pp": cand.pp, "dp": cand.dp, "ep": cand.ep,  # P/D: per pool
        "layout": None if pd else cand.layout.token,
        "scaling_unit": "pd_group" if pd else "replica",
        "pd": f"{pd.prefill}:{pd.decode}" if pd else None,
        "prefill_replicas": pd and pd.prefill, "decode_replicas": pd and pd.decode,
        "prefill_tp": pd and pd.prefill_tp, "decode_tp": pd and pd.decode_tp,
    }  # fmt: skip


def evaluate_capacity(task: PlanTask) -> dict[str, Any]:
    """Phase 1: the candidate's capacity per replica, its uncertainty, curve and cost-model
    source. A candidate that cannot run (does not fit, precision unsupported) or meets the
    SLOs at no rate keeps its row, with the reason."""
    cand = task.candidate
    row: dict[str, Any] = {**candidate_columns(cand), "status": "ok", "reason": None, "load_unit": task.unit}
    try:
        cfg, spec = _compose(task)
    except SimError as err:
        return {**row, "status": "infeasible", "reason": str(err)}
    cost = build_cost_model(spec.model, spec.hardware, spec.precision, spec.tp, spec.cost)
    source = cost_source(cost.assumptions())
    # A P/D group's batch limits and KV cache are its decode instances' (where tokens are
    # generated); its GPUs are both pools'.
    pools = spec.deployment.pools if spec.deployment and not spec.deployment.classic else ()
    decode = next((p for p in pools if p.role == "decode"), None)
    scheduler, memory = (decode.scheduler, decode.memory) if decode else (spec.scheduler, spec.memory)
    unit_gpus, unit_usd_per_hour = unit_gpus_and_price(spec)
    row.update({
        "model": spec.model.name,
        "gpus_per_replica": unit_gpus,
        "max_num_seqs": scheduler.max_num_seqs,
        "max_num_batched_tokens": scheduler.max_num_batched_tokens,
        "enable_prefix_caching": spec.enable_prefix_caching,
        "kv_cache_tokens": memory.num_engine_blocks * spec.block_size,
        "price_per_gpu_hour_usd": spec.hardware.price_per_hour_usd or None,
        "cost_model_source": source.kind,
        "cost_model_detail": source.detail,
    })  # fmt: skip
    probes = _Probes(task, replica_counts(cfg))
    per_seed = []
    start = task.start_rate or _start_rate(cfg)
    for seed in task.seeds:
        found = search_seed(
            lambda r, s: probes.run(cfg, r, s, task.requests, task.slo), seed, start, rel_tol=task.tol
        )
        if task.long_requests > task.requests:
            confirm_seed(
                lambda r, s: probes.run(cfg, r, s, task.long_requests, task.slo), found, step=task.tol
            )
        per_seed.append(found)
        start = found.lower_rate or start  # the next seed brackets from this answer
    capacity = summarize_seeds(per_seed)
    # SLOs that never bound up to the largest load tried: that load is a lower bound of the
    # capacity, and sizing on it can only overestimate the replicas (the check simulates them).
    lower_bound = bool(capacity["slo_never_bound"])
    if lower_bound:
        capacity["capacity_rate"] = capacity["capacity_at_least_rate"]
    if capacity["capacity_rate"] is not None:
        capacity["capacity_rate"] = task.load(capacity["capacity_rate"])
    row.update(_capacity_columns(capacity, probes.points))
    row["capacity_is_lower_bound"] = lower_bound
    if capacity["capacity_rate"] is None:
        return {**row, "status": "misses_slo", "reason": _no_capacity(probes.points, task)}
    replicas = max(1, math.ceil(task.target_rate / capacity["capacity_rate"] - 1e-9))
    row.update({
        "sizing": "estimated", "replicas": replicas, "gpus": replicas * unit_gpus,
        "usd_per_hour": unit_usd_per_hour * replicas or None,
    })  # fmt: skip
    return row


def evaluate_sizing(job: tuple[PlanTask, dict[str, Any]]) -> dict[str, Any]:
    """Phase 2: simulate the target rate on the replicas it needs (every seed), adding or
    removing replicas as sim.sweep.capacity does, and price the deployment at goodput."""
    task, row = job
    cfg = compose_candidate(task.base_overrides, task.candidate)  # checked in phase 1
    probes = _Probes(task, replica_counts(cfg))
    try:
        sizing = size_for_target(
            cfg, task.slo, row["capacity_per_replica_rate"], task.target_rate, list(task.seeds),
            task.long_requests, run=probes.run,
        )
    except SimError as err:
        return {**row, "status": "misses_slo", "reason": str(err), "sizing": "simulated"}
    return {**row, **_sizing_columns(sizing), "sizing": "simulated"}


def _no_capacity(points: list[dict[str, Any]], task: PlanTask) -> str:
    met = [p["rate"] for p in points if p["meets"]]
    if not met:
        return "no load meets the SLOs, even nearly idle" + (" (1 user)" if task.unit == "users" else "")
    return (
        f"{task.requests}-request probes met the SLOs up to {max(met):.3g} {task.unit}, but the"
        f" {task.long_requests}-request confirmation missed at every load tried below: the queue"
        " still drifts at that length; raise --requests"
    )


def _start_rate(cfg: DictConfig) -> float:
    workload = cfg.workload
    if workload.arrival == "trace" and workload.get("target_rate"):
        return float(workload.target_rate)
    if workload.arrival == "closed_loop":
        return float(workload.concurrency)
    return float(workload.rate)


def _capacity_columns(capacity: dict[str, Any], points: list[dict[str, Any]]) -> dict[str, Any]:
    # Seed 0's probes, one per rate (a confirmation replaces the shorter probe at its rate).
    by_rate = {p["rate"]: p for p in points if p["seed"] == points[0]["seed"]} if points else {}
    curve = [by_rate[r] for r in sorted(by_rate)]
    rate = capacity["capacity_rate"]
    at_capacity = [p for p in curve if rate is not None and p["rate"] == rate and p["meets"]]
    best = at_capacity[-1] if at_capacity else None
    return {
        "capacity_per_replica_rate": rate,
        "seed_mean_rate": capacity["seed_mean_rate"],
        "seed_std_rate": capacity["seed_std_rate"],
        "seed_spread_rate": capacity["seed_spread_rate"],
        "bracket_width_rate": capacity["bracket_width_rate"],
        "probes": capacity["probes"],
        "capacity_output_tokens_per_s_per_gpu": best and best["output_tokens_per_s_per_gpu"],
        "capacity_output_tokens_per_s_per_user": best and best["output_tokens_per_s_per_user"],
        "curve_rate": [p["rate"] for p in curve],
        "curve_output_tokens_per_s_per_gpu": [p["output_tokens_per_s_per_gpu"] for p in curve],
        "curve_output_tokens_per_s_per_user": [p["output_tokens_per_s_per_user"] for p in curve],
        "curve_meets": [p["meets"] for p in curve],
    }


def _sizing_columns(sizing: Any) -> dict[str, Any]:
    """The sized deployment at the target rate, over the seeds of its final check."""
    final = [r for n, r in sizing.checks if n == sizing.replicas]
    sums = [r.summary for r in final]
    ce = [s["cost_energy"] for s in sums]
    duration = [s["duration_s"] for s in sums]
    out_tokens = sum(s["throughput"]["output_tokens_per_s"] * d for s, d in zip(sums, duration))
    good_tokens = sum(s.get("goodput_output_tokens", 0) for s in sums)
    cost_usd = [c["cost_usd"] for c in ce]
    energy = [c["energy_j"] for c in ce]
    priced = all(c is not None for c in cost_usd)
    return {
        "replicas": sizing.replicas,
        "gpus": sizing.gpus,
        "usd_per_hour": sizing.usd_per_hour,
        "meets_slo": all(r.meets for r in final),
        "target_ttft_p99_s": max(r.ttft_p99_s for r in final),
        "target_tpot_p99_s": max(r.tpot_p99_s for r in final),
        "target_goodput_fraction": good_tokens / out_tokens if out_tokens else None,
        "target_output_tokens_per_s": out_tokens / sum(duration) if sum(duration) else None,
        "target_output_tokens_per_s_per_gpu": out_tokens / sum(duration) / sizing.gpus if sum(duration) else None,
        "usd_per_million_output_tokens_at_goodput": (
            sum(cost_usd) * 1e6 / good_tokens if priced and good_tokens else None
        ),
        "usd_per_million_output_tokens": sum(cost_usd) * 1e6 / out_tokens if priced and out_tokens else None,
        "joules_per_output_token": (
            sum(energy) / out_tokens if all(e is not None for e in energy) and out_tokens else None
        ),
        "sizing_checks": len(sizing.checks),
    }

