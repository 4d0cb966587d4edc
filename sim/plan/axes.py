"""The plan's candidate axes from its flags, checked against what the engine accepts before
anything runs:

- engine layouts: `--tp` x `--pp`, or `--layout tp8,dp8ep8` (TP, PP, vLLM's data-parallel
  attention and expert parallelism together). Each layout meets the engine's own checks
  (`sim.parallel.build_parallel_spec`) on every GPU of the plan: one that only an MoE model
  can run (DP attention, EP) is skipped for a dense model with a note; one the engine refuses
  on every GPU for another reason stops the plan with the engine's message; one refused on
  some GPUs only stays, and those candidates get a row saying why.
- prefill/decode splits: `--pd 1:1,1:2` (prefill:decode instances of one group, the P/D
  candidate's unit of scaling) x `--pd-tp 4:4,4:8` (prefill TP:decode TP; default: each TP
  of the layouts, both pools alike). Pools refuse what sim/config/build.py refuses for them:
  pipeline stages and DP attention (P/D candidates are TP groups; `--pp` and DP layouts apply
  to the classic candidates only), KV offload and speculative decoding (the plan stops).
"""

from __future__ import annotations

import argparse
from itertools import product
from typing import Callable, Sequence

from omegaconf import DictConfig

from sim.catalog import hardware_spec_from_config, load_catalog_entry, model_spec_from_config
from sim.config.build import build_run_spec
from sim.errors import ConfigError, SimError
from sim.parallel import build_parallel_spec
from sim.plan.evaluate import compose_candidate
from sim.plan.space import Candidate, Layout, PdSplit, parse_layouts, parse_list, parse_pairs, pd_splits
from sim.sweep.probe import with_rate

DEFAULT_TP = "1,2,4,8"


def holds_model(base: Sequence[str], hardware: str, precisions: Sequence[str], layouts: Sequence[Layout]) -> bool:
    """Whether the model fits on `hardware` at some precision and some layout of the space,
    largest first."""
    layouts = sorted(layouts, key=lambda lay: -lay.num_gpus)
    for precision, lay in product(precisions, layouts):
        try:
            cand = Candidate(hardware, precision, lay.tp, pp=lay.pp, dp=lay.dp, ep=lay.ep)
            build_run_spec(with_rate(compose_candidate(base, cand), 1.0, 0, 1))
            return True
        except SimError:
            continue
    return False


def layouts_from_flags(args: argparse.Namespace) -> list[Layout]:
    """`--layout`, or `--tp` x `--pp` (DP and EP 1)."""
    if args.layout:
        if args.tp is not None or str(args.pp or "1") != "1":
            raise ConfigError(
                f"--layout {args.layout} sets TP, PP, DP and EP together: give it or --tp/--pp, not both"
            )
        return parse_layouts(args.layout)
    tps = parse_list(args.tp or DEFAULT_TP, "tp", int)
    pps = parse_list(args.pp or "1", "pp", int)
    return [Layout(t, p) for t, p in product(tps, pps)]


def check_layouts(
    layouts: Sequence[Layout], cfg: DictConfig, hardware: Sequence[str], echo: Callable[[str], None]
) -> list[Layout]:
    """The layouts the engine accepts on at least one GPU of the plan (see the module's
    docstring for the others)."""
    model = model_spec_from_config(cfg.model)
    specs = [hardware_spec_from_config(load_catalog_entry("hardware", h)) for h in hardware]
    kept = []
    for lay in layouts:
        refusals = []
        for hw in specs:
            try:
                build_parallel_spec(model, hw, lay.tp, lay.pp, lay.dp, lay.ep, cfg.parallel.get("ep_load_imbalance"))
            except ConfigError as err:
                refusals.append(str(err))
        if len(refusals) < len(specs):
            kept.append(lay)
        elif not model.is_moe and (lay.dp > 1 or lay.ep > 1):
            why = next((r for r in refusals if "dense" in r or "no experts" in r), refusals[0])
            echo(f"skipped layout {lay.token} for {model.name} (a dense model): {why}")
        else:
            raise ConfigError(f"--layout {lay.token}: {refusals[0]}")
    if layouts and not kept:
        raise ConfigError(
            f"no layout of the plan applies to {model.name}: it is dense, and DP attention and EP need"
            " an MoE model; give TP layouts (--layout tp4,tp8 or --tp 4,8)"
        )
    return kept


def splits_from_flags(
    args: argparse.Namespace, layouts: Sequence[Layout], cfg: DictConfig, echo: Callable[[str], None]
) -> list[PdSplit]:
    """The P/D groups of `--pd` x `--pd-tp`; none without `--pd`."""
    if not args.pd:
        if args.pd_tp:
            raise ConfigError("--pd-tp sets the TP of the pools of --pd: give --pd too (e.g. --pd 1:1,1:2)")
        if cfg.deployment.get("pools"):
            echo(f"the config's deployment pools ({cfg.deployment.name}) are not a candidate: every"
                 " candidate sets its own (--pd P:D for prefill/decode splits)")
        return []
    refuse_pools(cfg)
    counts = parse_pairs(args.pd, "pd", "instance counts")
    if args.pd_tp:
        tps = parse_pairs(args.pd_tp, "pd-tp", "TP sizes")
    else:
        tps = list(dict.fromkeys((lay.tp, lay.tp) for lay in layouts if lay.dp == 1))
        if not tps:
            raise ConfigError("--pd: no TP layout to take the pools' TP from; give --pd-tp P:D (e.g. 8:8)")
    if any(lay.pp > 1 or lay.dp > 1 for lay in layouts):
        echo("P/D candidates run TP groups only (pools have no pipeline stages or DP attention here):"
             " --pp and DP layouts apply to the classic candidates")
    return pd_splits(counts, tps)


def refuse_pools(cfg: DictConfig) -> None:
    """What pools refuse (sim/config/build.py), for the whole plan: every P/D candidate would."""
    method = cfg.speculative.get("method")
    if method not in (None, "", "none"):
        raise ConfigError(
            f"--pd with speculative={method}: speculative decoding is modelled for the single engine"
            " of parallel.* only, not for deployment pools; drop --pd, or set speculative=none"
        )
    if float(cfg.kv_offload.get("cpu_size_gib") or 0.0) > 0:
        raise ConfigError(
            f"--pd with kv_offload={cfg.kv_offload.get('name')}: a host tier is modelled for the single"
            " engine of parallel.* only, not for deployment pools; drop --pd, or set kv_offload=none"
        )
