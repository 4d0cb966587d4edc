"""One in-process simulation at a chosen request rate, checked against latency SLOs.

A capacity search runs dozens of these, so a probe skips what a user-facing run does for
people: no Hydra run folder, no printed table, no progress bar, no steps.parquet. It composes
the config once (`compose_config`), then `run_probe` sets the rate, seed and request count,
runs `build_run_spec` + `simulate` into a temporary folder and reads requests.parquet back.

The SLO check drops the warm-up: requests arriving in the first `warmup_fraction` of the
arrival span meet an empty system and would flatter the tail. Requests that were rejected or
were still in flight at the end count as misses (infinite TTFT), so an overloaded probe cannot
pass by leaving its slowest requests out.
"""

from __future__ import annotations

import math
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from sim.config import compose_cache
from sim.config.build import build_run_spec, resolved_config
from sim.config.scenarios import CONFIG_DIR, register_scenarios
from sim.config.schema import register_schemas
from sim.errors import ConfigError
from sim.metrics.tables import read_columns
from sim.run import simulate

# Arrival processes whose intensity `workload.rate` sets (diurnal: the mean rate).
RATE_ARRIVALS = ("poisson", "constant", "gamma", "diurnal")
# A closed-loop probe runs at least this many requests per user: with fewer, most users send
# once and the probe measures its own ramp-up (an assumption, not a measured figure).
TURNS_PER_USER = 4
REQUEST_COLUMNS = ["status", "arrival_s", "ttft_s", "tpot_s", "output_tokens_generated"]


@dataclass(frozen=True, slots=True)
class Slo:
    ttft_p99_s: float
    tpot_p99_s: float
    warmup_fraction: float = 0.1  # of the arrival span, excluded from the check
    quantile: float = 0.99

    def __post_init__(self) -> None:
        """A negative or NaN target could never be met, and would read "no rate meets"."""
        for name in ("ttft_p99_s", "tpot_p99_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"SLO {name}={value} must be a finite number of seconds > 0")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError(f"warmup_fraction={self.warmup_fraction} must lie in [0, 1)")
        if not 0.0 < self.quantile <= 1.0:
            raise ConfigError(f"quantile={self.quantile} must lie in (0, 1]")


@dataclass(frozen=True, slots=True)
class ProbeResult:
    rate: float  # offered, requests/s
    seed: int
    num_checked: int  # requests after the warm-up
    num_failed: int  # of those: rejected or unfinished
    ttft_p99_s: float  # inf when more than 1% failed
    tpot_p99_s: float
    output_tokens_per_s: float  # achieved, whole run
    meets: bool
    summary: dict[str, Any]
    events_simulated: int = 0  # arrivals + engine steps (the run's manifest)
    engine_steps: int = 0
    simulate_s: float = 0.0  # wall time of the simulation itself, outputs included


@dataclass
class ProbeTally:
    """What the probes of this process have simulated so far: a launcher reports the part of
    each task (`sim.plan.launch`), so that a benchmark can print events/s and us per step."""

    probes: int = 0
    events_simulated: int = 0
    engine_steps: int = 0

    def add(self, result: ProbeResult) -> None:
        self.probes += 1
        self.events_simulated += result.events_simulated
        self.engine_steps += result.engine_steps

    def since(self, before: ProbeTally) -> ProbeTally:
        return ProbeTally(
            self.probes - before.probes,
            self.events_simulated - before.events_simulated,
            self.engine_steps - before.engine_steps,
        )


TALLY = ProbeTally()  # of this process: each worker keeps its own


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """configs/config.yaml plus the scenario overlays and `overrides`, as `python -m sim`."""
    register_schemas()
    register_scenarios()
    compose_cache.install()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            return compose(config_name="config", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


def compose_variant(base: DictConfig, base_overrides: Sequence[str], overrides: Sequence[str]) -> DictConfig:
    """`compose_config([*base_overrides, *overrides])`, from `base` (that composition without
    `overrides`) when it can be: overrides that only set values (`key=value`, `+key=value`,
    `~key`, no group choice, no sweep) are applied to a copy of `base` by Hydra's own
    `_apply_overrides_to_config`, as composing applies them after the defaults list, which
    they cannot change. Milliseconds instead of a composition, for the probes of a sweep;
    anything else, or an override Hydra refuses, composes in full (the error is Hydra's)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from sim.config.overrides import config_groups

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
        groups = set(config_groups())

        def sets_a_value(o: Any) -> bool:
            if o.is_hydra_override() or o.is_sweep_override() or o.package is not None:
                return False
            key = o.key_or_group
            return "/" not in key and ("." in key or key not in groups)

        if all(sets_a_value(o) for o in parsed):
            cfg = copy_config(base)
            ConfigLoaderImpl._apply_overrides_to_config(parsed, cfg)
            return cfg
    except Exception:  # noqa: BLE001 - composing in full gives Hydra's own message
        pass
    return compose_config([*base_overrides, *overrides])


def copy_config(cfg: DictConfig) -> DictConfig:
    """A deep copy of `cfg`: through pickle, ten times faster than `copy.deepcopy` on a
    DictConfig, with the same nodes, types and flags."""
    return pickle.loads(pickle.dumps(cfg, protocol=pickle.HIGHEST_PROTOCOL))


def with_rate(cfg: DictConfig, rate: float, seed: int, num_requests: int) -> DictConfig:
    """A copy of `cfg` offering `rate` req/s for `num_requests` requests, quietly. For a
    closed-loop workload the load is its number of users: `rate` users, rounded."""
    if not (math.isfinite(rate) and rate > 0):
        raise ConfigError(f"rate={rate} must be a finite number > 0")
    probe = copy_config(cfg)
    workload = probe.workload
    with open_dict(probe):
        if workload.arrival in RATE_ARRIVALS:
            workload.rate = float(rate)
        elif workload.arrival == "trace":
            workload.target_rate = float(rate)
        elif workload.arrival == "closed_loop":
            workload.concurrency = max(1, round(rate))
            # Every user must come back a few times, or the probe never leaves its start-up.
            num_requests = max(num_requests, TURNS_PER_USER * workload.concurrency)
        else:
            raise ConfigError(
                f"workload.arrival={workload.arrival!r} has no single rate to search over; use one"
                f" of {', '.join(RATE_ARRIVALS)} or a trace (rescaled with workload.target_rate)"
            )
        workload.num_requests = int(num_requests)
        workload.duration_s = None
        probe.seed = int(seed)
        probe.output.write_steps = False
        probe.output.print_summary = False
        probe.output.progress = False
        if "timeline_interval_s" in probe.output:
            probe.output.timeline_interval_s = 0.0
    return probe


def run_probe(
    cfg: DictConfig, rate: float, seed: int, num_requests: int, slo: Slo, out_dir: Path | None = None
) -> ProbeResult:
    """Simulate `cfg` at `rate` and check the SLO on the requests after the warm-up."""
    probe = with_rate(cfg, rate, seed, num_requests)
    spec = build_run_spec(probe)
    with tempfile.TemporaryDirectory(prefix="sim-probe-") as tmp:
        folder = out_dir or Path(tmp)
        result = simulate(spec, folder, resolved_config(probe))
        requests = read_columns(folder / "requests.parquet", REQUEST_COLUMNS).to_pydict()
    ttft, tpot, num_failed = slo_samples(requests, slo.warmup_fraction)
    ttft_q = tail(ttft, slo.quantile)
    tpot_q = tail(tpot, slo.quantile)
    probe_result = ProbeResult(
        rate=float(rate),
        seed=int(seed),
        num_checked=int(ttft.size),
        num_failed=num_failed,
        ttft_p99_s=ttft_q,
        tpot_p99_s=tpot_q,
        output_tokens_per_s=float(result.summary["throughput"]["output_tokens_per_s"]),
        meets=bool(ttft.size) and ttft_q <= slo.ttft_p99_s and tpot_q <= slo.tpot_p99_s,
        summary=result.summary,
        events_simulated=int(result.manifest["events_simulated"]),
        engine_steps=int(result.manifest["engine_steps"]),
        simulate_s=float(result.manifest["wall_time_s"]),
    )
    TALLY.add(probe_result)
    return probe_result


def slo_samples(
    requests: dict[str, list], warmup_fraction: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """TTFT and TPOT samples of the requests that arrived after the warm-up; a rejected or
    unfinished request is an infinite TTFT and TPOT. Also returns how many failed."""
    arrival = np.asarray(requests["arrival_s"], dtype=np.float64)
    if arrival.size == 0:
        return np.empty(0), np.empty(0), 0
    start = arrival.min() + warmup_fraction * (arrival.max() - arrival.min())
    kept = arrival >= start
    finished = np.asarray(requests["status"], dtype=object) == "finished"
    ttft = np.where(finished, np.asarray(requests["ttft_s"], dtype=np.float64), np.inf)[kept]
    tpot_all = np.where(finished, np.asarray(requests["tpot_s"], dtype=np.float64), np.inf)
    tpot = tpot_all[kept]
    tpot = tpot[~np.isnan(tpot)]  # one-token outputs have no TPOT
    return ttft, tpot, int((~finished[kept]).sum())


def tail(values: np.ndarray, quantile: float) -> float:
    """An order statistic (no interpolation, so infinite samples stay infinite)."""
    if values.size == 0:
        return 0.0
    return float(np.quantile(values, quantile, method="inverted_cdf"))
