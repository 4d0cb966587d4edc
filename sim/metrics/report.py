"""The summary as a readable table for the terminal."""

from __future__ import annotations

from typing import Any


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e3:,.1f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def _num(v: float | None, fmt: str = ",.1f") -> str:
    return "-" if v is None else format(v, fmt)


def format_summary(summary: dict[str, Any]) -> str:
    setup = summary["setup"]
    req = summary["requests"]
    thr = summary["throughput"]
    lat = summary["latency_s"]
    util = summary["utilization"]
    kv = summary["kv_cache"]
    good = summary["goodput"]
    lines = [
        f"== {summary['scenario']}: {setup['model']} on {setup['gpus']}x {setup['hardware']}"
        f" (TP{setup['tp']} x {setup['replicas']} replica(s), {setup['precision']})",
    ]
    if summary.get("question"):
        lines.append(f"   {summary['question']}")
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
        f"goodput      {_num(good['requests_per_s'], ',.2f')} req/s meet TTFT<={good['slo']['ttft_s']}s"
        f" and TPOT<={good['slo']['tpot_s']}s ({_pct(good['fraction_of_finished'])} of finished)",
        "",
        f"{'latency (ms)':<14}{'mean':>10}{'p50':>10}{'p90':>10}{'p99':>10}",
    ]
    for key, label in (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2e", "end-to-end")):
        d = lat[key]
        lines.append(
            f"{label:<14}{_ms(d['mean']):>10}{_ms(d['p50']):>10}{_ms(d['p90']):>10}{_ms(d['p99']):>10}"
        )
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
        f"  of {setup['num_gpu_blocks']:,} blocks ({setup['kv_cache_tokens']:,} tokens)",
    ]
    shares = summary["gpu_time_share_by_operator"]
    top = sorted(shares.items(), key=lambda kv_: -kv_[1])
    lines.append(
        "GPU time     " + "  ".join(f"{op} {_pct(v)}" for op, v in top if v >= 0.005)
    )
    lines += _cost_energy_lines(summary.get("cost_energy"))
    lines.append("cost-model   " + summary.get("assumptions", {}).get("efficiency_source", {}).get("cost_model", "unknown"))
    return "\n".join(lines)


def _cost_energy_lines(ce: dict[str, Any] | None) -> list[str]:
    """Dollars per token at the hardware's hourly price; power from sim.economics' model."""
    if not ce:
        return []
    lines = [""]
    if ce.get("usd_per_hour") is not None:
        lines.append(
            f"cost         ${ce['usd_per_hour']:,.2f}/h for {ce['gpus']} GPU(s)"
            f"   ${_num(ce['usd_per_million_output_tokens'], ',.2f')} per M output tokens"
            f"   ${_num(ce['usd_per_million_tokens'], ',.3f')} per M tokens (in + out)"
        )
    model = ce.get("power_model")
    if ce.get("energy_j") is not None and model:
        lines.append(
            f"energy       {_num(ce['mean_power_w_per_gpu'], ',.0f')} W mean per GPU"
            f" (idle {model['idle_w']:,.0f} W, TDP {model['tdp_w']:,.0f} W)"
            f"   {_num(ce['joules_per_output_token'], ',.3f')} J per output token"
            f"   {_num(ce['output_tokens_per_s_per_w'], ',.2f')} output tok/s per W"
        )
    return lines if len(lines) > 1 else []
