"""A plan's Pareto plot, InferenceMAX-style: output tokens/s per GPU against output tokens/s
per user (1 / median TPOT), one curve per candidate from the probes of its capacity search
(one replica, rising request rate), the TPOT SLO marked, and the chosen configuration labelled.

Input: the rows of plan.parquet (`python -m sim.plan`), as dicts or as the file's path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pyarrow.parquet as pq

from analysis.style import SERIES, SLO, plt, save

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def read_plan(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()


def pareto(
    rows: Sequence[dict[str, Any]] | Path, out: Path, slo_tpot_s: float | None = None,
    target_rate: float | None = None, title: str = "",
) -> Path:
    rows = read_plan(Path(rows)) if isinstance(rows, (str, Path)) else list(rows)
    unit = (rows[0].get("load_unit") if rows else None) or "req/s"
    key = "_users" if unit == "users" and rows and "curve_users" in rows[0] else "_rate"
    fig, ax = plt.subplots(figsize=(9, 6))
    drawn = 0
    for i, row in enumerate(r for r in rows if r.get("curve" + key)):
        xs, ys = row["curve_output_tokens_per_s_per_user"], row["curve_output_tokens_per_s_per_gpu"]
        pts = [(x, y, m) for x, y, m in zip(xs, ys, row["curve_meets"]) if x and y]
        if not pts:
            continue
        colour, marker = SERIES[i % len(SERIES)], _MARKERS[(i // len(SERIES)) % len(_MARKERS)]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", color=colour, lw=1.2, alpha=0.8,
                label=f"{row['candidate']} ({row.get('cost_model_source') or '?'})")
        for x, y, meets in pts:
            ax.plot(x, y, marker, color=colour, ms=5, mfc=colour if meets else "white")
        drawn += 1
    if slo_tpot_s:
        ax.axvline(1.0 / slo_tpot_s, color=SLO, ls="--", lw=1)
        ax.annotate(f"TPOT SLO {slo_tpot_s * 1e3:g} ms = {1 / slo_tpot_s:g} tok/s/user\n(SLO on p99; x uses p50)",
                    (1.0 / slo_tpot_s, 0.98), xycoords=("data", "axes fraction"), xytext=(4, -4),
                    textcoords="offset points", fontsize=7, color=SLO, va="top")
    chosen = next((r for r in rows if r.get("chosen")), None)
    if chosen and chosen.get("capacity_output_tokens_per_s_per_user"):
        x, y = chosen["capacity_output_tokens_per_s_per_user"], chosen["capacity_output_tokens_per_s_per_gpu"]
        ax.plot(x, y, "*", color="black", ms=14, zorder=5)
        usd = chosen.get("usd_per_hour")
        ax.annotate(
            f"chosen: {chosen['candidate']}\n{chosen['replicas']} replica(s) = {chosen['gpus']} GPUs"
            + (f", ${usd:,.2f}/h" if usd else "")
            + f"\nat {chosen['capacity_per_replica' + key]:.{2 if unit == 'req/s' else 0}f} {unit} per replica",
            (x, y), xytext=(12, 12), textcoords="offset points", fontsize=8,
            arrowprops={"arrowstyle": "-", "color": "black", "lw": 0.8},
        )
    ax.set_xlabel("output tokens/s per user (1 / median TPOT)")
    ax.set_ylabel("output tokens/s per GPU")
    ax.set_ylim(bottom=0)
    if drawn:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), title="candidate (step times)")
    ax.plot([], [], "o", color="grey", label="_meets")
    target = f" at {target_rate:g} {unit} target" if target_rate else ""
    ax.set_title(title or f"Throughput per GPU against interactivity, one replica (P/D: one group) per candidate{target}\n"
                 "filled: probe met the SLOs; hollow: missed")
    return save(fig, out)
