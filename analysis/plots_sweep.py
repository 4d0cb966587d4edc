"""Plots across runs: latency against throughput over a rate sweep, the batch-size knee, and two
(or more) hardware choices side by side. Inputs are tables from `python -m sim.sweep.collect`
(dicts of columns) or run folders."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.ticker import FuncFormatter

from analysis.runs import Columns, Run, run_flags, usd_per_million_goodput_tokens
from analysis.studies import cost_model_of, short_source
from analysis.style import SERIES, SLO, plt, save

THROUGHPUT = "throughput.output_tokens_per_s"
TTFT_P99 = "latency_s.ttft.p99"
TPOT_P99 = "latency_s.tpot.p99"


def groups(table: Columns, by: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """(label, row mask) for each combination of the `by` columns, in first-seen order."""
    n = len(next(iter(table.values())))
    if not by:
        return [("", np.ones(n, dtype=bool))]
    keys = [tuple(str(table[c][i]) for c in by) for i in range(n)]
    seen = list(dict.fromkeys(keys))
    return [(" ".join(f"{c.split('.')[-1]}={v}" for c, v in zip(by, key)),
             np.array([k == key for k in keys])) for key in seen]


def latency_throughput(
    table: Columns, out: Path, rate: str = "workload.rate", by: Sequence[str] = (),
    slo_ttft_s: float | None = None, slo_tpot_s: float | None = None, title: str = "",
) -> Path:
    """TTFT p99 and TPOT p99 against achieved output tokens/s, one line per group, points
    labelled with the offered rate."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for (label, mask), colour in zip(groups(table, by), SERIES):
        order = np.argsort(table[rate][mask].astype(float))
        x = table[THROUGHPUT][mask][order]
        for ax, metric in zip(axes, (TTFT_P99, TPOT_P99)):
            y = table[metric][mask][order].astype(float)
            ax.plot(x, y, "o-", color=colour, ms=4, lw=1.3, label=label or None)
            for xi, yi, r in zip(x, y, table[rate][mask][order]):
                ax.annotate(f"{float(r):g}", (xi, yi), xytext=(3, 3), textcoords="offset points",
                            fontsize=6, color=colour)
    for ax, metric, limit, name in ((axes[0], TTFT_P99, slo_ttft_s, "TTFT p99 (s)"),
                                    (axes[1], TPOT_P99, slo_tpot_s, "TPOT p99 (s)")):
        ys = table[metric].astype(float)
        top = np.nanmax(ys[np.isfinite(ys)], initial=limit or 1.0)
        if limit:
            ax.axhline(limit, color=SLO, ls="--", lw=1, label=f"SLO {limit:g} s")
            top = max(top, limit)
        ax.set_yscale("log")
        ax.set_ylim(top=top * 3)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_label))
        ax.set_xlabel("achieved output tokens/s (whole deployment)")
        ax.set_ylabel(name)
        ax.legend(loc="upper left")
    axes[0].set_title("Time to first token (labels: offered req/s)")
    axes[1].set_title("Time per output token")
    fig.suptitle(title or "Latency against throughput across a rate sweep", y=1.0)
    fig.tight_layout()
    return save(fig, out)


def _minor_label(v: float, _pos: int) -> str:
    """Label the 2x and 5x minor ticks of a log axis, plainly (0.2, 5, 20)."""
    if v <= 0:
        return ""
    mantissa = round(v / 10 ** np.floor(np.log10(v)))
    return f"{v:g}" if mantissa in (2, 5) else ""


def batch_knee(
    table: Columns, out: Path, batch: str = "scheduler.max_num_seqs", by: Sequence[str] = (),
    slo_tpot_s: float | None = None, title: str = "",
) -> Path:
    """Throughput, TPOT p99 and the efficiency figures against the batch limit: where more
    batch stops paying."""
    util = [c for c in ("utilization.mfu", "utilization.memory_bandwidth_utilization") if c in table]
    fig, axes = plt.subplots(3 if util else 2, 1, figsize=(8, 8.5 if util else 6.5), sharex=True)
    top, middle = axes[0], axes[1]
    for (label, mask), colour in zip(groups(table, by), SERIES):
        x = table[batch][mask].astype(float)
        order = np.argsort(x)
        top.plot(x[order], table[THROUGHPUT][mask][order], "o-", color=colour, label=label or None)
        middle.plot(x[order], table[TPOT_P99][mask][order] * 1e3, "o-", color=colour, label=label or None)
        for column, style in zip(util, ("o-", "s--")):
            axes[2].plot(x[order], 100 * table[column][mask][order].astype(float), style, color=colour, ms=4)
    if slo_tpot_s:
        middle.axhline(slo_tpot_s * 1e3, color=SLO, ls="--", lw=1, label=f"SLO {slo_tpot_s * 1e3:g} ms")
    top.set_xscale("log", base=2)
    top.set_ylim(0, top.get_ylim()[1] * 1.1)
    top.set_ylabel("output tokens/s")
    middle.set_ylabel("TPOT p99 (ms)")
    if util:
        axes[2].set_ylabel("% of peak")
        axes[2].set_ylim(0, None)
        axes[2].plot([], [], "o-", color="grey", label="MFU")
        axes[2].plot([], [], "s--", color="grey", label="HBM bandwidth used")
        axes[2].legend(loc="lower right")
    axes[-1].set_xlabel(f"{batch} (batch limit, log scale)")
    xs = np.unique(table[batch].astype(float))
    axes[-1].set_xticks(xs, [f"{v:g}" for v in xs])
    top.legend(loc="upper left")
    middle.legend(loc="upper left")
    top.set_title("Throughput, per-token latency and efficiency against the batch limit")
    fig.suptitle(title or "The batch-size knee", y=1.0)
    fig.tight_layout()
    return save(fig, out)


COMPARE = (  # panel title, value from a summary, label format, SLO line from a summary
    ("output tok/s per GPU", lambda s: s["throughput"]["output_tokens_per_s_per_gpu"], "{:,.0f}"),
    ("TTFT p99 (s)", lambda s: s["latency_s"]["ttft"]["p99"], "{:.2f}", lambda s: s["goodput"]["slo"]["ttft_s"]),
    ("TPOT p99 (ms)", lambda s: 1e3 * (s["latency_s"]["tpot"]["p99"] or 0), "{:.1f}",
     lambda s: 1e3 * s["goodput"]["slo"]["tpot_s"]),
    ("MFU", lambda s: 100 * s["utilization"]["mfu"], "{:.1f}%"),
    ("HBM bandwidth used", lambda s: 100 * s["utilization"]["memory_bandwidth_utilization"], "{:.1f}%"),
    ("GPU busy", lambda s: 100 * s["utilization"]["busy_fraction"], "{:.0f}%"),
    ("$ per M output tokens at goodput", None, "${:.2f}"),
    ("J per output token", lambda s: (s.get("cost_energy") or {}).get("joules_per_output_token"), "{:.3f}"),
)


def compare_runs(runs: Sequence[Run], out: Path, labels: Sequence[str] | None = None, title: str = "") -> Path:
    """Side by side: the same metrics of each run as bars, one panel per metric. Under each
    bar, the run's cost-model source and stated uncertainty (a transferred or flat run must not
    look as trustworthy as a calibrated one); a run that missed its SLOs or was overloaded says
    so and its bars are hatched; cost is per output token of the requests that met the SLOs."""
    labels = list(labels or [r.label for r in runs])
    flags = [run_flags(r.summary) for r in runs]
    labels = [f"{label}\n{' + '.join(f)}" if f else label for label, f in zip(labels, flags)]
    labels = [f"{label}\n{short_source(cost_model_of(r.summary))}" for label, r in zip(labels, runs)]
    fig, axes = plt.subplots(2, 4, figsize=(13, 5.5))
    for ax, (name, get, fmt, *slo) in zip(axes.flat, COMPARE):
        values = [get(r.summary) if get else usd_per_million_goodput_tokens(r) for r in runs]
        heights = [v or 0.0 for v in values]
        if slo and runs:
            limit = slo[0](runs[0].summary)
            ax.axhline(limit, color=SLO, ls="--", lw=1, label="SLO")
            heights_max = max(heights + [limit])
            ax.legend(loc="upper left")
        else:
            heights_max = max(heights + [1e-9])
        bars = ax.bar(range(len(runs)), heights, color=SERIES[: len(runs)],
                      hatch=None, edgecolor="none")
        for bar, f in zip(bars, flags):
            if f:
                bar.set_hatch("//")
                bar.set_edgecolor(SLO)
        for bar, v in zip(bars, values):
            ax.annotate("n/a" if v is None else fmt.format(v), (bar.get_x() + bar.get_width() / 2,
                        bar.get_height()), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=8)
        ax.set_title(name)
        ax.set_xticks(range(len(runs)), labels, rotation=0 if any("\n" in x for x in labels) else 12, fontsize=7)
        for tick, f in zip(ax.get_xticklabels(), flags):
            if f:
                tick.set_color(SLO)
        ax.set_ylim(0, heights_max * 1.2)
        ax.grid(axis="x", visible=False)
    rate = runs[0].summary["throughput"]["requests_per_s"] if runs else 0
    fig.suptitle(title or f"Side by side at the same traffic (~{rate:.1f} req/s finished)", y=1.0)
    fig.tight_layout()
    return save(fig, out)
