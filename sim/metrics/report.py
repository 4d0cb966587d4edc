"""The summary as a readable table for the terminal.

Units of what people read (README, "Units"): latencies in ms, fractions in %, rates per
second, money in $, energy in J. The files keep raw SI units (seconds, fractions).

Every figure that could mislead when the run missed its SLOs carries a flag: a run whose p99
TTFT, TPOT or E2E exceeds the SLO is marked `MISSES SLO`, and one that left requests rejected
or unfinished, or in which fewer than half the finished requests met the SLOs, `OVERLOADED`.
Cost per token is also given at goodput: the cost divided by the output tokens of the
requests that met the SLOs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sim.metrics.tables import read_columns

from sim.deploy.compare import comparison_lines
from sim.metrics.pools import pool_lines

from sim.metrics.spec_report import speculative_lines
from sim.metrics.cells import ms as _ms, pct as _pct

OVERLOAD_GOODPUT_FRACTION = 0.5  # below this share of finished requests meeting the SLOs


def _num(v: float | None, fmt: str = ",.1f") -> str:
    return "-" if v is None else format(v, fmt)


def slo_text(slo: dict[str, Any]) -> str:
    """`TTFT<=2000 ms and TPOT<=100 ms` (and E2E when set)."""
    parts = [f"TTFT<={slo['ttft_s'] * 1e3:g} ms", f"TPOT<={slo['tpot_s'] * 1e3:g} ms"]
    if slo.get("e2e_s"):
        parts.append(f"E2E<={slo['e2e_s'] * 1e3:g} ms")
    return " and ".join(parts)


def slo_flags(summary: dict[str, Any]) -> list[str]:
    """`MISSES SLO` and/or `OVERLOADED`, with the figures that set them; [] for a healthy run."""
    lat, good, req = summary["latency_s"], summary["goodput"], summary["requests"]
    slo = good["slo"]
    flags = []
    missed = [
        f"{name} p99 {_ms(lat[key]['p99'])} ms > {limit * 1e3:g} ms"
        for key, name, limit in (("ttft", "TTFT", slo["ttft_s"]), ("tpot", "TPOT", slo["tpot_s"]),
                                 ("e2e", "E2E", slo.get("e2e_s")))
        if limit is not None and lat[key]["p99"] is not None and lat[key]["p99"] > limit
    ]
    if missed:
        flags.append("MISSES SLO (" + ", ".join(missed) + ")")
    failed = req["rejected"] + req["unfinished"]
    fraction = good["fraction_of_finished"]
    if failed or (fraction is not None and fraction < OVERLOAD_GOODPUT_FRACTION):
        why = [f"{failed:,} requests rejected or unfinished"] if failed else []
        if fraction is not None and fraction < OVERLOAD_GOODPUT_FRACTION:
            why.append(f"only {_pct(fraction)} of finished requests meet the SLOs")
        flags.append("OVERLOADED (" + ", ".join(why) + ")")
    return flags


def request_figures(requests_path: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """What the summary does not hold, from requests.parquet: output tokens of the requests
    that met the SLOs (for cost at goodput) and TTFT by turn of multi-turn sessions."""
    if not Path(requests_path).exists():
        return {}
    cols = ["status", "ttft_s", "tpot_s", "e2e_s", "output_tokens_generated", "prompt_tokens",
            "cached_tokens", "turn"]
    t = read_columns(requests_path, cols).to_pydict()
    finished = np.asarray(t["status"], dtype=object) == "finished"
    ttft = np.asarray(t["ttft_s"], dtype=np.float64)
    tpot = np.asarray(t["tpot_s"], dtype=np.float64)
    e2e = np.asarray(t["e2e_s"], dtype=np.float64)
    slo = summary["goodput"]["slo"]
    with np.errstate(invalid="ignore"):
        good = finished & (ttft <= slo["ttft_s"]) & ((tpot <= slo["tpot_s"]) | np.isnan(tpot))
        if slo.get("e2e_s") is not None:
            good &= e2e <= slo["e2e_s"]
    tokens = np.asarray(t["output_tokens_generated"], dtype=np.int64)
    figures: dict[str, Any] = {"goodput_output_tokens": int(tokens[good].sum())}
    turn = np.asarray(t["turn"], dtype=np.int64)
    if finished.any() and turn[finished].max() > 0:
        prompt = np.asarray(t["prompt_tokens"], dtype=np.float64)
        cached = np.asarray(t["cached_tokens"], dtype=np.float64)
        by_turn = []
        for k in np.unique(turn[finished]):
            m = finished & (turn == k)
            by_turn.append({
                "turn": int(k) + 1, "requests": int(m.sum()),
                "ttft_p50_s": float(np.percentile(ttft[m], 50)),
                "ttft_p99_s": float(np.percentile(ttft[m], 99)),
                "prompt_tokens_mean": float(prompt[m].mean()),
                "cached_fraction": float(cached[m].sum() / max(prompt[m].sum(), 1.0)),
            })
        figures["ttft_by_turn"] = by_turn
    return figures


def _capacity_note(setup: dict[str, Any]) -> str:
    """`; 139.8 GiB per GPU (measured)`: the capacity the KV cache was sized from, and whether it
    was measured, published, transferred or assumed (the hardware entry's memory_source)."""
    memory = setup.get("memory") or {}
    if "memory_gib" not in memory or memory.get("blocks_given"):
        return ""
    kind = (setup.get("memory_source") or "source not given").split(":")[0]
    return f"; sized from {memory['memory_gib']:.1f} GiB per GPU ({kind})"


def format_summary(
    summary: dict[str, Any], overrides: Sequence[str] = (), extra: dict[str, Any] | None = None
) -> str:
    """The table; `overrides` (what the command line changed) head it, `extra` is what
    `request_figures` read from requests.parquet."""
    setup = summary["setup"]
    req = summary["requests"]
    thr = summary["throughput"]
    lat = summary["latency_s"]
    util = summary["utilization"]
    kv = summary["kv_cache"]
    good = summary["goodput"]
    extra = extra or {}
    changed = f" with {' '.join(overrides)}" if overrides else ""
    lines = [
        f"== {summary['scenario']}{changed}: {setup['model']} on {setup['gpus']}x {setup['hardware']}"
        f" ({setup.get('layout') or 'TP' + str(setup['tp'])} x {setup['replicas']} replica(s), {setup['precision']})"
        if "deployment" not in setup
        else f"== {summary['scenario']}{changed}: {setup['model']} on {setup['gpus']} GPUs: {setup['deployment']}",
    ]
    if summary.get("question"):
        if overrides:
            lines.append(f"   the scenario asks (before the overrides above): {summary['question']}")
        else:
            lines.append(f"   {summary['question']}")
    flags = slo_flags(summary)
    lines += [f"!! {flag}" for flag in flags]
    lines += [
        "",
        f"requests     arrived {req['arrived']:,}  finished {req['finished']:,}"
        f"  rejected {req['rejected']:,}  unfinished {req['unfinished']:,}"
        f"  preemptions {req['preemptions']:,}",
        f"duration     {summary['duration_s']:,.1f} s simulated",
        "",
        "throughput   requests/s {0}   input tok/s {1}   output tok/s {2}   output tok/s/GPU {3}".format(
            _num(thr["requests_per_s"], ",.2f"),
            _num(thr["input_tokens_per_s"], ",.0f"),
            _num(thr["output_tokens_per_s"], ",.0f"),
            _num(thr["output_tokens_per_s_per_gpu"], ",.0f"),
        ),
        f"goodput      {_num(good['requests_per_s'], ',.2f')} req/s meet {slo_text(good['slo'])}"
        f" ({_pct(good['fraction_of_finished'])} of finished)",
        "",
        f"{'latency (ms)':<14}{'mean':>10}{'p50':>10}{'p90':>10}{'p99':>10}",
    ]
    for key, label in (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2e", "end-to-end")):
        d = lat[key]
        lines.append(
            f"{label:<14}{_ms(d['mean']):>10}{_ms(d['p50']):>10}{_ms(d['p90']):>10}{_ms(d['p99']):>10}"
        )
    lines += _turn_lines(extra.get("ttft_by_turn"))
    bound = (
        "memory-bandwidth"
        if (util["memory_bound_time_share"] or 0) >= (util["compute_bound_time_share"] or 0)
        else "compute"
    )
    lines += [
        "",
        f"GPU busy     {_pct(util['busy_fraction'])}  (what nvidia-smi would show: not efficiency)",
        f"MFU          {_pct(util['mfu'])}  ({_pct(util['mfu_while_busy'])} while busy)",
        f"HBM BW util  {_pct(util['memory_bandwidth_utilization'])}"
        f"  ({_pct(util['memory_bandwidth_utilization_while_busy'])} while busy)",
        f"bound by     compute {_pct(util['compute_bound_time_share'])} of GPU time,"
        f" memory bandwidth {_pct(util['memory_bound_time_share'])},"
        f" latency {_pct(util['latency_bound_time_share'])}  -> mostly {bound}-bound",
        f"KV cache     mean {_pct(kv['usage_mean'])}  max {_pct(kv['usage_max'])}"
        f"  of {setup['num_gpu_blocks']:,} {setup['block_size']}-token blocks ({setup['kv_cache_tokens']:,} tokens"
        f"{' in ' + setup['kv_cache_dtype'] if 'kv_cache_dtype' in setup else ''})"
        + _capacity_note(setup),
    ]
    if setup.get("enable_prefix_caching"):
        lines.append(
            f"prefix cache hit rate {_pct(kv.get('prefix_cache_hit_rate'))} of the prompt tokens of"
            f" finished requests  (hits {kv.get('prefix_cache_hits_tokens') or 0:,} of"
            f" {kv.get('prefix_cache_queries_tokens') or 0:,} tokens looked up;"
            f" {kv.get('evicted_blocks') or 0:,} cached blocks evicted)"
        )
    if summary.get("kv_offload"):
        from sim.kv_offload.report import offload_lines

        lines += offload_lines(summary["kv_offload"], summary)
    shares = summary["gpu_time_share_by_operator"]
    top = sorted(shares.items(), key=lambda kv_: -kv_[1])
    lines.append(
        "GPU time     " + "  ".join(f"{op} {_pct(v)}" for op, v in top if v >= 0.005)
    )
    lines += _cost_energy_lines(summary.get("cost_energy"), extra.get("goodput_output_tokens"), flags)
    lines.append("cost-model   " + summary.get("assumptions", {}).get("efficiency_source", {}).get("cost_model", "unknown"))
    mla = summary.get("assumptions", {}).get("mla_attention")
    if mla:  # which MLA backend, measured or assumed (sim.cost.mla_backend)
        lines.append("mla decode   " + mla)
    comm = summary.get("assumptions", {}).get("multi_gpu_communication")
    if comm:  # what one GPU could not measure (sim.cost.parallel_assumptions)
        lines.append("links        assumed, not measured: " + ", ".join(k.replace("_", " ") for k in comm))
    lines += pool_lines(summary) + comparison_lines(summary)
    lines += speculative_lines(summary)
    return "\n".join(lines)


def _turn_lines(by_turn: list[dict[str, Any]] | None) -> list[str]:
    if not by_turn:
        return []
    lines = ["", f"{'TTFT by turn':<14}{'requests':>10}{'p50 (ms)':>10}{'p99 (ms)':>10}"
             f"{'prompt tok':>12}{'cached':>9}"]
    for row in by_turn:
        lines.append(
            f"{'turn ' + str(row['turn']):<14}{row['requests']:>10,}{_ms(row['ttft_p50_s']):>10}"
            f"{_ms(row['ttft_p99_s']):>10}{row['prompt_tokens_mean']:>12,.0f}"
            f"{_pct(row['cached_fraction']):>9}"
        )
    return lines


def _cost_energy_lines(
    ce: dict[str, Any] | None, goodput_tokens: int | None = None, flags: Sequence[str] = ()
) -> list[str]:
    """Dollars per token at the hardware's hourly price; power from sim.economics' model."""
    if not ce:
        return []
    lines = [""]
    warn = "   !! " + "; ".join(f.split(" (")[0] for f in flags) if flags else ""
    if ce.get("usd_per_hour") is not None:
        at_goodput = ""
        if goodput_tokens is not None and ce.get("cost_usd") is not None:
            value = ce["cost_usd"] * 1e6 / goodput_tokens if goodput_tokens else None
            at_goodput = f"   ${_num(value, ',.2f')} per M output tokens at goodput"
        lines.append(
            f"cost         ${ce['usd_per_hour']:,.2f}/h for {ce['gpus']} GPU(s)"
            f"   ${_num(ce['usd_per_million_output_tokens'], ',.2f')} per M output tokens"
            f"   ${_num(ce['usd_per_million_tokens'], ',.3f')} per M tokens (in + out){at_goodput}{warn}"
        )
    model = ce.get("power_model")
    if ce.get("energy_j") is not None and model:
        lines.append(
            f"energy       {_num(ce['mean_power_w_per_gpu'], ',.0f')} W mean per GPU"
            f" (idle {model['idle_w']:,.0f} W, TDP {model['tdp_w']:,.0f} W)"
            f"   {_num(ce['joules_per_output_token'], ',.3f')} J per output token"
            f"   {_num(ce['output_tokens_per_s_per_w'], ',.2f')} output tok/s per W{warn}"
        )
    return lines if len(lines) > 1 else []
