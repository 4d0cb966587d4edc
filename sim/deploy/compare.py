"""Runs the setups `deployment.compare` names after the main one, and answers the scenario's
question from all of them: which meet the p99 SLOs, and at what goodput and cost.

Each setup runs into `<run folder>/compare/<label>/` with its own tables and summary; the main
run's summary.json gets the table under `comparison`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable


def _row(label: str, summary: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    from sim.metrics.report import request_figures

    lat, good, setup = summary["latency_s"], summary["goodput"], summary["setup"]
    slo = good["slo"]
    ce = summary.get("cost_energy") or {}
    good_tokens = request_figures(out_dir / "requests.parquet", summary).get("goodput_output_tokens")
    cost = ce.get("cost_usd")
    ttft_p99, tpot_p99 = lat["ttft"]["p99"], lat["tpot"]["p99"]
    failed = summary["requests"]["rejected"] + summary["requests"]["unfinished"]
    meets = (
        ttft_p99 is not None and ttft_p99 <= slo["ttft_s"]
        and (tpot_p99 is None or tpot_p99 <= slo["tpot_s"]) and not failed
    )  # fmt: skip
    transfer = (summary.get("kv_transfer") or {}).get("ttft_share_in_transfer") or {}
    return {
        "label": label,
        "deployment": setup.get("deployment")
        or f"{setup['replicas']}x {setup['hardware']} TP{setup['tp']} {setup['precision']}",
        "gpus": setup["gpus"],
        "ttft_p99_s": ttft_p99,
        "tpot_p99_s": tpot_p99,
        "meets_slo_p99": bool(meets),
        "goodput_requests_per_s": good["requests_per_s"],
        "goodput_per_gpu": good["requests_per_s"] / setup["gpus"],
        "fraction_meeting_slo": good["fraction_of_finished"],
        "usd_per_million_good_output_tokens": cost * 1e6 / good_tokens if cost and good_tokens else None,
        "joules_per_output_token": ce.get("joules_per_output_token"),
        "ttft_share_in_transfer": transfer.get("of_total_ttft"),
        "prefix_cache_hit_rate": summary["kv_cache"].get("prefix_cache_hit_rate"),
        "folder": str(out_dir),
    }


def compare_runs(
    spec: Any, summary: dict[str, Any], out_dir: Path, run: Callable[[Any, Path, dict[str, Any]], dict[str, Any]]
) -> dict[str, Any]:
    label = spec.deployment.label or spec.deployment.name
    rows = [_row(label, summary, out_dir)]
    for alt_label, alt_spec, resolved in spec.alternatives:
        folder = out_dir / "compare" / alt_label
        rows.append(_row(alt_label, run(alt_spec, folder, resolved), folder))
    return {"rows": rows, "answer": answer(rows, summary["goodput"]["slo"])}


def answer(rows: list[dict[str, Any]], slo: dict[str, Any]) -> str:
    """Which setups meet both p99 targets (with nothing rejected or left unfinished), the
    goodput of each, and the one with the lowest cost per good output token among them."""
    target = f"TTFT p99 <= {slo['ttft_s'] * 1e3:g} ms and TPOT p99 <= {slo['tpot_s'] * 1e3:g} ms"
    meeting = [r for r in rows if r["meets_slo_p99"]]
    if not meeting:
        best = max(rows, key=lambda r: r["goodput_requests_per_s"])
        return (
            f"none meets {target}; the highest goodput is {best['label']}'s,"
            f" {best['goodput_requests_per_s']:.2f} req/s"
        )
    goodputs = ", ".join(
        f"{r['label']} {r['goodput_requests_per_s']:.2f} req/s ({r['goodput_per_gpu']:.3f}/GPU)" for r in meeting
    )
    priced = [r for r in meeting if r["usd_per_million_good_output_tokens"] is not None]
    cheapest = ""
    if priced:
        c = min(priced, key=lambda r: (r["usd_per_million_good_output_tokens"], r["gpus"]))
        cheapest = f"; cheapest per good output token: {c['label']} (${c['usd_per_million_good_output_tokens']:,.2f} per M)"
    verb = "meets" if len(meeting) == 1 else "meet"
    return f"{', '.join(r['label'] for r in meeting)} {verb} {target}; goodput {goodputs}{cheapest}"


def _fmt(v: float | None, fmt: str, scale: float = 1.0) -> str:
    return "-" if v is None else format(v * scale, fmt)


def comparison_lines(summary: dict[str, Any]) -> list[str]:
    comparison = summary.get("comparison")
    if not comparison:
        return []
    lines = [
        "",
        "compared     (each setup on the same traffic; folders under compare/)",
        f"  {'setup':<22}{'GPUs':>5}{'TTFT p99':>10}{'TPOT p99':>10}{'SLO':>5}{'goodput':>9}{'/GPU':>7}"
        f"{'$/M good':>10}{'J/tok':>7}{'xfer/TTFT':>10}{'hit':>7}",
    ]
    for r in comparison["rows"]:
        lines.append(
            f"  {r['label']:<22}{r['gpus']:>5}{_fmt(r['ttft_p99_s'], ',.0f', 1e3):>10}"
            f"{_fmt(r['tpot_p99_s'], ',.1f', 1e3):>10}{'yes' if r['meets_slo_p99'] else 'no':>5}"
            f"{_fmt(r['goodput_requests_per_s'], '.2f'):>9}{_fmt(r['goodput_per_gpu'], '.3f'):>7}"
            f"{_fmt(r['usd_per_million_good_output_tokens'], ',.2f'):>10}"
            f"{_fmt(r['joules_per_output_token'], '.2f'):>7}"
            f"{_fmt(r['ttft_share_in_transfer'], '.1%'):>10}{_fmt(r['prefix_cache_hit_rate'], '.1%'):>7}"
        )
    lines.append(f"answer       {comparison['answer']}")
    return lines
