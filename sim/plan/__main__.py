"""`python -m sim.plan` (or `sim-plan`): the cheapest deployment that meets the SLOs.

Which GPU, how many, which precision and layout (TP, PP, DP x EP), colocated or split into
prefill and decode pools, at what cost, for this model and traffic under these SLOs.

    python -m sim.plan +scenario=llama70b_h100 --target-rate 20 --ttft-p99 2 --tpot-p99 0.1 \
        --hardware h100_sxm,h200 --precision bf16,fp8 --tp 2,4 --pd 1:1,1:2 -o OUT

Candidates: every GPU x precision x engine layout (`--tp` x `--pp`, or `--layout tp8,dp8ep8`
with vLLM's DP attention and expert parallelism for MoE models) x max_num_seqs, and beside
them prefill/decode splits (`--pd P:D` instances per group x `--pd-tp` prefill TP:decode TP),
whose unit of scaling is one prefill+decode group.

The model and traffic come from the Hydra overrides (a scenario, `model=`, `workload=` or a
trace); the SLOs default to the config's `slo.*`. The target is a request rate
(`--target-rate`, open-loop traffic) or a number of users (`--target-users`, with a closed-loop
workload such as `workload=closed_loop_chat`: each user sends its next request
`workload.think_time_s` after the last one is answered); capacity is then users per replica. Every flag can also come from a YAML file
(`--plan FILE`, keys named as the flags: `target_rate: 20`, `hardware: h100_sxm,h200`,
`overrides: [+scenario=llama70b_h100]`); the command line wins. Writes OUT/plan.parquet (one
row per candidate) and OUT/pareto.png, and prints the ranked table.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sim.catalog import list_catalog
from sim.config.overrides import check_overrides
from sim.errors import ConfigError, SimError
from sim.metrics.report import slo_text
from sim.plan.axes import DEFAULT_TP, check_layouts, holds_model, layouts_from_flags, splits_from_flags
from sim.plan.evaluate import PlanTask, evaluate_capacity, evaluate_sizing
from sim.plan.launch import LAUNCHERS, run_tasks
from sim.plan.space import candidates, check_names, drop_candidate_keys, parse_list
from sim.plan.table import answer, format_table, plan_unit, rank, write_parquet
from sim.sweep.probe import Slo, compose_config


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sim.plan", description=__doc__.split("\n")[0])
    p.add_argument("overrides", nargs="*", help="Hydra overrides: model, traffic, scenario")
    p.add_argument("--plan", type=Path, default=None, help="YAML file of these flags")
    p.add_argument("--target-rate", type=float, default=None, help="req/s to size for (open-loop traffic)")
    p.add_argument("--target-users", type=int, default=None,
                   help="users to size for (closed-loop traffic, e.g. workload=closed_loop_chat)")
    p.add_argument("--ttft-p99", type=float, default=None, help="seconds (default: slo.ttft_s)")
    p.add_argument("--tpot-p99", type=float, default=None, help="seconds (default: slo.tpot_s)")
    p.add_argument("--e2e-p99", type=float, default=None, help="seconds (default: slo.e2e_s, none)")
    p.add_argument("--percentile", type=float, default=99.0, help="of the SLOs (default 99)")
    p.add_argument("--hardware", default=None, help="comma list (default: every catalog GPU that holds the model)")
    p.add_argument("--precision", default=None, help="comma list (default: the config's)")
    p.add_argument("--tp", default=None, help=f"comma list or range 1-8 (default {DEFAULT_TP})")
    p.add_argument("--pp", default="1", help="pipeline stages, comma list (default 1)")
    p.add_argument("--layout", default=None,
                   help="engine layouts instead of --tp/--pp: tp8,dp8ep8,tp2pp2 (DP attention and EP: MoE models)")
    p.add_argument("--pd", default=None,
                   help="prefill:decode instances of one P/D group, comma list: 1:1,1:2 (default: no P/D)")
    p.add_argument("--pd-tp", default=None,
                   help="prefill TP:decode TP of the --pd pools, comma list: 4:4,4:8 (default: each TP, both alike)")
    p.add_argument("--max-num-seqs", default=None, help="comma list (default: the config's)")
    p.add_argument("--seeds", type=int, default=2, help="independent searches per candidate")
    p.add_argument("--requests", type=int, default=1000, help="requests per probe")
    p.add_argument("--confirm-factor", type=float, default=2.0, help="confirmation probe length")
    p.add_argument("--tol", type=float, default=0.03, help="bracket width / rate to stop at")
    p.add_argument("--warmup", type=float, default=0.1, help="fraction of arrivals excluded")
    p.add_argument("--start-rate", type=float, default=None, help="default: workload.rate")
    p.add_argument("--launcher", default="joblib", choices=LAUNCHERS)
    p.add_argument("--jobs", type=int, default=None, help="workers (default: SIM_JOBS or every core)")
    p.add_argument("-o", "--out", type=Path, default=None, help="default outputs/plans/<time>")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-plot", action="store_true")
    return p


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = parser()
    args = p.parse_args(argv)
    if args.plan is not None:
        if not args.plan.is_file():
            raise ConfigError(f"--plan {args.plan}: no such file")
        loaded = OmegaConf.to_container(OmegaConf.load(args.plan), resolve=True)
        if not isinstance(loaded, dict):
            raise ConfigError(f"--plan {args.plan}: expected a mapping of flags")
        known = {a.dest for a in p._actions}
        unknown = sorted(k for k in (k.replace("-", "_") for k in loaded) if k not in known)
        if unknown:
            raise ConfigError(f"--plan {args.plan}: unknown keys {', '.join(unknown)}; keys are the flags' names")
        file_values = {k.replace("-", "_"): v for k, v in loaded.items()}
        overrides = [str(o) for o in file_values.pop("overrides", [])]
        for key, value in file_values.items():
            _check_pairs(args.plan, key, value)
            if isinstance(value, list):
                file_values[key] = ",".join(str(v) for v in value)
        p.set_defaults(**file_values)
        args = p.parse_args(argv)
        args.overrides = overrides + list(args.overrides)
    return args


def _check_pairs(path: Path, key: str, value: Any) -> None:
    """YAML 1.1 reads an unquoted `1:2` as the base-60 number 62: refuse it rather than plan
    a split nobody asked for."""
    items = value if isinstance(value, list) else [value]
    if key in ("pd", "pd_tp") and any(not isinstance(v, str) for v in items):
        raise ConfigError(
            f"--plan {path}: {key}: quote each prefill:decode pair ('1:2'); YAML reads 1:2 unquoted as"
            " the base-60 number 62"
        )


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def plan(
    args: argparse.Namespace, echo=print, stats: dict[str, float] | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The ranked rows and the SLOs they were judged by (seconds); `stats["cpu_s"]`: the
    workers' CPU time."""
    overrides = check_overrides(args.overrides)
    base_cfg = compose_config(overrides)
    target, unit = target_load(args, str(base_cfg.workload.arrival))
    q = args.percentile / 100.0
    if not 0 < q < 1:
        raise ConfigError(f"--percentile {args.percentile}: must lie in (0, 100)")
    ttft = args.ttft_p99 if args.ttft_p99 is not None else float(base_cfg.slo.ttft_s)
    tpot = args.tpot_p99 if args.tpot_p99 is not None else float(base_cfg.slo.tpot_s)
    e2e = args.e2e_p99 if args.e2e_p99 is not None else base_cfg.slo.get("e2e_s")
    for name, value in (("ttft-p99", ttft), ("tpot-p99", tpot), ("e2e-p99", e2e)):
        if value is not None and value <= 0:
            raise ConfigError(f"--{name} {value}: must be positive (seconds)")
    if args.seeds < 1 or args.requests < 10:
        raise ConfigError("--seeds must be >= 1 and --requests >= 10")
    slo_keys = [f"slo.ttft_s={ttft}", f"slo.tpot_s={tpot}"] + ([f"slo.e2e_s={e2e}"] if e2e else [])
    base = [*drop_candidate_keys(overrides), *slo_keys]
    precisions = parse_list(args.precision, "precision") or [str(base_cfg.precision.name)]
    layouts = layouts_from_flags(args)
    seqs = parse_list(args.max_num_seqs, "max-num-seqs", int) or [None]
    if args.hardware:
        hardware = parse_list(args.hardware, "hardware")
        check_names(hardware, "hardware")
    else:
        catalog = list_catalog("hardware")
        hardware = [h for h in catalog if holds_model(base, h, precisions, layouts)]
        left_out = [h for h in catalog if h not in hardware]
        if left_out:
            echo(f"left out (cannot hold {base_cfg.model.name} with {', '.join(lay.token for lay in layouts)}"
                 f" in {', '.join(precisions)}): {', '.join(left_out)}")
    layouts = check_layouts(layouts, base_cfg, hardware, echo)
    splits = splits_from_flags(args, layouts, base_cfg, echo)
    space = candidates(hardware, precisions, layouts, seqs, splits=splits)
    slo = Slo(ttft, tpot, warmup_fraction=args.warmup, quantile=q)
    tasks = [
        PlanTask(c, tuple(base), slo, e2e, target, tuple(range(args.seeds)), args.requests,
                 args.confirm_factor, args.tol, args.start_rate, unit)
        for c in space
    ]
    pd = f" + {len(splits)} P/D splits" if splits else ""
    echo(f"plan: {len(tasks)} candidates ({len(hardware)} GPUs x {len(precisions)} precisions x"
         f" ({len(layouts)} layouts{pd}) x {len(seqs)} max_num_seqs), {args.seeds} seed(s), {args.requests}"
         f" requests per probe, launcher {args.launcher}")
    run = dict(launcher=args.launcher, jobs=args.jobs, progress=not args.no_progress, stats=stats)
    rows = run_tasks(evaluate_capacity, tasks, label="capacity searches", **run)
    sized: set[int] = set()
    while True:  # size every candidate that could still be the cheapest
        todo = contenders(rows, sized)
        if not todo:
            break
        echo(f"plan: sizing {len(todo)} candidate(s) that could be the cheapest at {target:g} {unit}"
             f" by simulation; the others keep the estimate ceil(target / capacity)")
        done = run_tasks(evaluate_sizing, [(tasks[i], rows[i]) for i in todo], label="sizings", **run)
        for i, row in zip(todo, done):
            rows[i] = row
        sized.update(todo)
    return rank(rows), {"ttft_s": ttft, "tpot_s": tpot, "e2e_s": e2e}


def target_load(args: argparse.Namespace, arrival: str) -> tuple[float, str]:
    """What to size for, and its unit: a request rate for open-loop traffic, a number of users
    for closed-loop traffic (its load is set by the users, not by a rate)."""
    if args.target_rate is not None and args.target_users is not None:
        raise ConfigError("give one target: --target-rate (open-loop req/s) or --target-users (closed loop)")
    if args.target_users is not None:
        if arrival != "closed_loop":
            raise ConfigError(
                f"--target-users sizes for closed-loop users, but workload.arrival={arrival}: pick a"
                " closed-loop workload (workload=closed_loop_chat, think time in workload.think_time_s)"
                " or size for a rate with --target-rate"
            )
        if args.target_users < 1:
            raise ConfigError(f"--target-users {args.target_users}: must be at least 1")
        return float(args.target_users), "users"
    if arrival == "closed_loop":
        raise ConfigError(
            "a closed-loop workload has no request rate to size for: give --target-users N"
        )
    if args.target_rate is None or not args.target_rate > 0:
        raise ConfigError("give the traffic to size for: --target-rate R (requests/s, > 0) or --target-users N")
    return float(args.target_rate), "req/s"


def _cost(row: dict[str, Any], replicas: int) -> float:
    """What `replicas` replicas of the candidate cost: $/h when priced, else GPUs."""
    gpus = replicas * row.get("gpus_per_replica", row["tp"])
    price = row.get("price_per_gpu_hour_usd")
    return gpus * price if price else float(gpus)


def contenders(rows: Sequence[dict[str, Any]], sized: set[int]) -> list[int]:
    """Unsized candidates whose cost with one replica fewer than estimated would not exceed
    the cheapest cost known (sized, or estimated where nothing is sized yet): only they can
    be the answer, so only they are worth simulating at the target."""
    live = [i for i, r in enumerate(rows) if r["status"] == "ok" and r.get("replicas")]
    if not live:
        return []
    known = [i for i in live if i in sized and rows[i].get("meets_slo")]
    pool = known or live
    best = min(_cost(rows[i], rows[i]["replicas"]) for i in pool)
    return [
        i for i in live
        if i not in sized and _cost(rows[i], max(1, rows[i]["replicas"] - 1)) <= best * (1 + 1e-9)
    ]


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None, stats: dict[str, float] | None = None) -> int:
    start = time.perf_counter()
    stats = {} if stats is None else stats
    # SIGTERM as Ctrl-C: the launcher then stops its workers instead of leaving them running.
    previous = signal.signal(signal.SIGTERM, _interrupt) if _main_thread() else None
    try:
        args = parse_args(argv)
        ranked, slo = plan(args, stats=stats)
    except (SimError, HydraException, OmegaConfBaseException) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        name = str(stop) or "SIGINT"
        print(f"\ninterrupted by {name}: no plan written", file=sys.stderr)
        return 143 if name == "SIGTERM" else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    out = args.out or Path("outputs") / "plans" / time.strftime("%Y-%m-%d_%H-%M-%S")
    first = next((r for r in ranked if "model" in r), {})
    unit = plan_unit(ranked)
    target = float(args.target_users if unit == "users" else args.target_rate)
    meta = {
        "overrides": list(args.overrides), "target": target, "target_unit": unit,
        "percentile": args.percentile, "seeds": args.seeds, "requests": args.requests,
        "confirm_factor": args.confirm_factor, "tol": args.tol, "model": first.get("model"),
    }  # fmt: skip
    meta["slo"] = slo
    write_parquet(ranked, out / "plan.parquet", meta)
    print()
    print(format_table(ranked))
    print()
    print(answer(ranked, target, slo_text(slo).replace("<=", f" p{args.percentile:g} <= ")))
    if not args.no_plot:
        _plot(ranked, out, slo, target)
    stats["wall_s"] = time.perf_counter() - start
    print(f"\n{len(ranked)} candidates in {stats['wall_s']:,.0f} s wall ({stats.get('cpu_s', 0):,.0f} s"
          f" CPU in the workers) -> {out / 'plan.parquet'}")
    return 0


def _plot(ranked: list[dict[str, Any]], out: Path, slo: dict[str, Any], target: float) -> None:
    try:
        from analysis.plots_plan import pareto
    except ImportError as exc:  # matplotlib missing
        print(f"pareto.png not written ({exc.name or exc} is not installed): pip install -e '.[plots]'",
              file=sys.stderr)
        return
    path = pareto(ranked, out / "pareto.png", slo["tpot_s"], target)
    print(f"pareto plot -> {path}")


if __name__ == "__main__":
    sys.exit(main())
