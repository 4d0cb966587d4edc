"""Capacity search: the highest request rate one configuration serves within latency SLOs.

    python -m sim.sweep.capacity +scenario=llama8b_h100 --ttft-p99 2 --tpot-p99 0.1
    python -m sim.sweep.capacity +scenario=llama70b_h100 --target-rate 20 --seeds 3

For each seed, independently: probe the scenario's rate, double (or halve) it until one probe
meets the SLOs and another misses, then bisect until the bracket is narrower than `--tol` of
its lower end. The answer is the lowest of the seeds' lower ends (every seed met the SLOs
there); the uncertainty reported is the bracket width and the seed-to-seed spread of the
per-seed capacities. With the same seed, a higher rate replays the same requests with the
gaps between arrivals shrunk, so the probes of one seed differ only in load.

Near saturation the queue drifts, so the tail latency keeps growing with the length of the run:
a probe of N requests can pass a rate that a run of 2N fails. So the lower end is confirmed
with a probe `--confirm-factor` times longer (default 2), stepping down by `--tol` while that
misses; the bracket's upper end follows.

`--target-rate R` then sizes the deployment: replicas = ceil(R / capacity per replica), checked
by simulating R on that many replicas (each seed, confirmation-length runs) and adding replicas
until every seed meets the SLOs, or removing them while all still do. GPUs = replicas x TP.
With deployment pools (P/D), the unit scaled is the pools as given, together: n units run
every pool's replicas times n.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from hydra.errors import HydraException
from omegaconf import DictConfig, open_dict
from omegaconf.errors import OmegaConfBaseException

from sim.config.build import RunSpec, build_run_spec
from sim.config.overrides import check_overrides
from sim.cost.roofline import build_cost_model
from sim.errors import ConfigError, SimError
from sim.sweep.probe import ProbeResult, Slo, compose_config, run_probe

Probe = Callable[[float, int], ProbeResult]


@dataclass(slots=True)
class SeedCapacity:
    seed: int
    lower_rate: float | None  # highest rate probed that met the SLOs (None: none did)
    upper_rate: float | None  # lowest rate probed above it that missed (None: none did)
    probes: list[ProbeResult] = field(default_factory=list)
    confirm_steps: int = 0  # times the longer probe sent the lower end down


@dataclass(slots=True)
class Sizing:
    target_rate: float
    replicas: int
    gpus: int
    usd_per_hour: float | None
    checks: list[tuple[int, ProbeResult]]  # (replicas, probe at the target rate)


def search_seed(
    probe: Probe,
    seed: int,
    start_rate: float,
    rel_tol: float = 0.02,
    max_probes: int = 24,
    min_rate: float = 1e-3,
) -> SeedCapacity:
    """Bracket, then bisect, the rate at which `probe` stops meeting the SLOs."""
    found = SeedCapacity(seed, None, None)

    def check(rate: float) -> bool:
        result = probe(rate, seed)
        found.probes.append(result)
        if result.meets:
            found.lower_rate = rate
        else:
            found.upper_rate = rate
        return result.meets

    rate = start_rate
    meets = check(rate)
    while len(found.probes) < max_probes:  # bracket: one meeting and one missing rate
        if meets and found.upper_rate is None:
            rate *= 2.0
        elif not meets and found.lower_rate is None:
            rate /= 2.0
            if rate < min_rate:
                return found  # the SLOs cannot be met even nearly idle
        else:
            break
        meets = check(rate)
    while len(found.probes) < max_probes and found.lower_rate and found.upper_rate:
        if found.upper_rate - found.lower_rate <= rel_tol * found.lower_rate:
            break
        check(0.5 * (found.lower_rate + found.upper_rate))
    return found


def confirm_seed(probe: Probe, found: SeedCapacity, step: float = 0.02, max_steps: int = 10) -> None:
    """Re-run the lower end with a longer probe; while it misses, lower the rate by `step`
    (the missed rate becomes the upper end). Unconfirmed after `max_steps`: no capacity."""
    rate = found.lower_rate
    if rate is None:
        return
    for _ in range(max_steps):
        result = probe(rate, found.seed)
        found.probes.append(result)
        if result.meets:
            found.lower_rate = rate
            return
        found.upper_rate = rate if found.upper_rate is None else min(found.upper_rate, rate)
        found.confirm_steps += 1
        rate *= 1.0 - step
    found.lower_rate = None


def summarize_seeds(seeds: list[SeedCapacity]) -> dict[str, Any]:
    """The answer (lowest per-seed capacity) and its uncertainty.

    A seed whose every probe met the SLOs (no upper end) bounds its capacity from below only.
    When the lowest lower end is such a seed's, the SLOs never bound: `capacity_rate` is None
    and `capacity_at_least_rate` the largest rate known to meet them on every seed."""
    lows = [s.lower_rate for s in seeds]
    met = [x for x in lows if x is not None]
    widths = [s.upper_rate - s.lower_rate for s in seeds if s.lower_rate and s.upper_rate]
    mean = sum(met) / len(met) if met else None
    std = (
        math.sqrt(sum((x - mean) ** 2 for x in met) / (len(met) - 1))
        if mean is not None and len(met) > 1
        else 0.0
    )
    all_met = bool(met) and len(met) == len(lows)
    lowest = min(met) if all_met else None
    never_bound = all_met and any(
        s.upper_rate is None and s.lower_rate == lowest for s in seeds
    )
    return {
        "capacity_rate": None if never_bound else lowest,
        "slo_never_bound": never_bound,
        "capacity_at_least_rate": lowest if never_bound else None,
        "per_seed_rate": lows,
        "seed_mean_rate": mean,
        "seed_std_rate": std if met else None,
        "seed_spread_rate": (max(met) - min(met)) if met else None,
        "bracket_width_rate": max(widths) if widths else None,
        "probes": sum(len(s.probes) for s in seeds),
        "confirm_steps": [s.confirm_steps for s in seeds],
    }


def size_for_target(
    cfg: DictConfig,
    slo: Slo,
    capacity_rate: float,
    target_rate: float,
    seeds: Sequence[int],
    num_requests: int,
    max_extra: int = 4,
    run: Callable[..., ProbeResult] = run_probe,
) -> Sizing:
    """The fewest replicas (and GPUs) that hold `target_rate` within the SLOs on every seed:
    start from ceil(target / capacity per replica), add replicas while a seed misses, and try
    one fewer while all meet (a router spreading load evenly can beat the estimate). `run`
    simulates one check (`run_probe`'s arguments); sim.plan passes one that keeps more figures."""
    base_replicas = scaling_units(cfg)
    per_replica = capacity_rate / base_replicas
    replicas = max(1, math.ceil(target_rate / per_replica - 1e-9))
    checks: list[tuple[int, ProbeResult]] = []

    def meets(n: int) -> bool:
        requests = max(num_requests, num_requests * n // base_replicas)
        results = [run(with_units(cfg, n), target_rate, s, requests, slo) for s in seeds]
        checks.extend((n, r) for r in results)
        return all(r.meets for r in results)

    if meets(replicas):
        while replicas > 1 and meets(replicas - 1):
            replicas -= 1
    else:
        for _ in range(max_extra):
            replicas += 1
            if meets(replicas):
                break
        else:
            raise SimError(
                f"{replicas} replicas still miss the SLOs at {target_rate} req/s (capacity per"
                f" replica {per_replica:.3g} req/s); check the router and the SLOs"
            )
    gpus, usd_per_hour = unit_gpus_and_price(build_run_spec(cfg))
    return Sizing(target_rate, replicas, replicas * gpus, usd_per_hour * replicas or None, checks)


def _pools(cfg: DictConfig) -> Any:
    deployment = cfg.get("deployment")
    return (deployment.get("pools") if deployment is not None else None) or {}


def scaling_units(cfg: DictConfig) -> int:
    """How many units of scaling `cfg` runs: `parallel.replicas` replicas, or, with
    deployment pools, 1: the pools as listed are one unit (a prefill+decode group), scaled
    together by `with_units`."""
    return 1 if _pools(cfg) else int(cfg.parallel.replicas)


def replica_counts(cfg: DictConfig) -> tuple[int, ...]:
    """The replicas `cfg` runs, per pool (one entry without pools)."""
    pools = _pools(cfg)
    if pools:
        return tuple(int(p.get("replicas", 1)) for p in pools.values())
    return (int(cfg.parallel.replicas),)


def with_units(cfg: DictConfig, n: int) -> DictConfig:
    """`cfg` with `n` units of scaling (`scaling_units`): n replicas, or every pool's replicas
    times n."""
    if not _pools(cfg):
        return _with_replicas(cfg, n)
    scaled = copy.deepcopy(cfg)
    with open_dict(scaled):
        for pool in scaled.deployment.pools.values():
            pool.replicas = int(pool.get("replicas", 1)) * n
    return scaled


def unit_gpus_and_price(spec: RunSpec) -> tuple[int, float]:
    """GPUs and $/h of one unit of scaling: a replica of tp x pp x dp GPUs
    (sim.parallel.ParallelSpec.num_gpus), or the pools' replicas x TP, each at its own GPU's
    price (0 where unpriced)."""
    deployment = spec.deployment
    if deployment is None or deployment.classic:
        gpus = spec.gpus_per_replica
        return gpus, (spec.hardware.price_per_hour_usd or 0.0) * gpus
    usd = sum((p.hardware.price_per_hour_usd or 0.0) * p.num_gpus for p in deployment.pools)
    return deployment.num_gpus, usd


def _with_replicas(cfg: DictConfig, replicas: int) -> DictConfig:
    scaled = copy.deepcopy(cfg)
    with open_dict(scaled):
        scaled.parallel.replicas = replicas
    return scaled


# ---- command line -------------------------------------------------------------------------------


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sim.sweep.capacity",
        description="Highest request rate that meets TTFT and TPOT p99 SLOs; replicas for a target.",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. +scenario=llama8b_h100")
    parser.add_argument("--ttft-p99", type=float, default=2.0, help="seconds (default 2)")
    parser.add_argument("--tpot-p99", type=float, default=0.1, help="seconds (default 0.1)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per probe")
    parser.add_argument("--seeds", type=int, default=1, help="independent searches (seeds 0..N-1)")
    parser.add_argument("--warmup", type=float, default=0.1, help="fraction of arrivals excluded")
    parser.add_argument("--tol", type=float, default=0.02, help="bracket width / rate to stop at")
    parser.add_argument("--confirm-factor", type=float, default=2.0,
                        help="confirm the answer with probes this many times longer (<= 1: off)")
    parser.add_argument("--start-rate", type=float, default=None, help="default: workload.rate")
    parser.add_argument("--target-rate", type=float, default=None, help="req/s to size for")
    parser.add_argument("--json", type=Path, default=None, help="write the answer here")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Refuse arguments that cannot describe a search, rather than answer "no rate meets"."""

    def positive(name: str, value: float | None, allow_none: bool = False) -> None:
        if value is None and allow_none:
            return
        if value is None or not (math.isfinite(value) and value > 0):
            raise ConfigError(f"--{name} must be a finite number > 0, got {value}")

    positive("ttft-p99", args.ttft_p99)
    positive("tpot-p99", args.tpot_p99)
    positive("tol", args.tol)
    positive("start-rate", args.start_rate, allow_none=True)
    positive("target-rate", args.target_rate, allow_none=True)
    if args.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1 (searches over seeds 0..N-1), got {args.seeds}")
    if args.requests < 1:
        raise ConfigError(f"--requests must be at least 1, got {args.requests}")
    if not 0.0 <= args.warmup < 1.0:
        raise ConfigError(f"--warmup is a fraction of the arrival span in [0, 1), got {args.warmup}")
    if not math.isfinite(args.confirm_factor):
        raise ConfigError(f"--confirm-factor must be finite (<= 1 turns it off), got {args.confirm_factor}")


def capacity_report(args: argparse.Namespace, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the search the arguments describe, printing each probe; returns the answer."""
    check_args(args)
    cfg = compose_config(check_overrides(args.overrides))  # unknown keys refused, as in `sim`
    slo = Slo(args.ttft_p99, args.tpot_p99, warmup_fraction=args.warmup)
    seeds = list(range(args.seeds))
    long_requests = int(args.requests * max(args.confirm_factor, 1.0))
    per_seed = _search_seeds(cfg, args, slo, seeds, long_requests, echo)
    answer: dict[str, Any] = {
        "overrides": list(args.overrides),
        "slo": asdict(slo),
        "requests_per_probe": args.requests,
        "requests_per_confirmation": long_requests,
        **summarize_seeds(per_seed),
        "tp": int(cfg.parallel.tp),
        "replicas": int(cfg.parallel.replicas),
        "cost_model": _cost_model_source(cfg),
    }
    echo(f"cost model {answer['cost_model']}")
    rate = answer["capacity_rate"]
    if answer["slo_never_bound"]:
        echo(
            f"capacity   at least {answer['capacity_at_least_rate']:.3g} req/s: the SLOs (TTFT p99 <="
            f" {slo.ttft_p99_s * 1e3:g} ms, TPOT p99 <= {slo.tpot_p99_s * 1e3:g} ms) never bound up to the largest"
            " rate tried; tighten them, or the rate is limited by something they do not measure"
        )
    elif rate is None:
        echo("no rate meets the SLOs (even nearly idle): relax them or change the configuration")
    else:
        width = answer["bracket_width_rate"]
        echo(
            f"capacity   {rate:.3g} req/s meets TTFT p99 <= {slo.ttft_p99_s * 1e3:g} ms and TPOT p99 <="
            f" {slo.tpot_p99_s * 1e3:g} ms on {answer['replicas']} replica(s) x TP{answer['tp']}"
            f"  (bracket +{width or 0:.2g} req/s; seeds {len(seeds)}, spread"
            f" {answer['seed_spread_rate']:.2g} req/s)"
        )
    if args.target_rate and answer["slo_never_bound"]:
        echo("sizing     skipped: without a capacity per replica there is nothing to divide by")
    if args.target_rate and rate:
        sizing = size_for_target(cfg, slo, rate, args.target_rate, seeds, long_requests)
        for replicas, check in sizing.checks:
            echo(f"{_probe_line(check)}  with {replicas} replica(s)")
        answer["sizing"] = {k: v for k, v in asdict(sizing).items() if k != "checks"}
        cost = f", ${sizing.usd_per_hour:,.2f}/h" if sizing.usd_per_hour else ""
        echo(
            f"sizing     {args.target_rate:g} req/s needs {sizing.replicas} replica(s) ="
            f" {sizing.gpus} GPUs{cost}"
        )
    return answer


def _cost_model_source(cfg: DictConfig) -> str:
    """Where the step times come from and their stated uncertainty (sim.cost.profiles)."""
    spec = build_run_spec(cfg)
    model = build_cost_model(spec.model, spec.hardware, spec.precision, spec.tp, spec.cost)
    return model.provenance()["cost_model"]


def _search_seeds(
    cfg: DictConfig, args: argparse.Namespace, slo: Slo, seeds: list[int], long_requests: int,
    echo: Callable[[str], None],
) -> list[SeedCapacity]:
    """One search per seed, each confirmed with the longer probe; every probe is echoed."""

    def probe(rate: float, seed: int) -> ProbeResult:
        result = run_probe(cfg, rate, seed, args.requests, slo)
        echo(_probe_line(result))
        return result

    def long_probe(rate: float, seed: int) -> ProbeResult:
        result = run_probe(cfg, rate, seed, long_requests, slo)
        echo(f"{_probe_line(result)}  (confirming with {long_requests} requests)")
        return result

    echo(f"{'req/s':>9} {'seed':>4} {'TTFT p99 ms':>12} {'TPOT p99 ms':>12} {'failed':>6} {'out tok/s':>10}")
    start = args.start_rate if args.start_rate is not None else float(cfg.workload.rate)
    per_seed = []
    for seed in seeds:
        found = search_seed(probe, seed, start, rel_tol=args.tol)
        if long_requests > args.requests:
            confirm_seed(long_probe, found, step=args.tol)
        per_seed.append(found)
    return per_seed


def _probe_line(r: ProbeResult) -> str:
    verdict = "meets" if r.meets else "misses"
    return (
        f"{r.rate:>9.3f} {r.seed:>4} {r.ttft_p99_s * 1e3:>12,.1f} {r.tpot_p99_s * 1e3:>12,.1f} {r.num_failed:>6}"
        f" {r.output_tokens_per_s:>10,.0f}  {verdict}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    try:
        answer = capacity_report(args)
    except (SimError, HydraException, OmegaConfBaseException) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(answer, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
