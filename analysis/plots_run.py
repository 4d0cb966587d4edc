"""Plots of one run: roofline of its steps, step time by operator class, timeline dashboard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import PercentFormatter

from analysis.runs import Run, op_classes
from analysis.style import DECODE, PREFILL, ROOF, operator_colour, plt, save
from analysis.timeline import bin_run

OUTSIDE = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)}  # legends right of the panels
MAX_POINTS = 15_000  # per class in the roofline scatter (sampled, seeded)


def roofline(run: Run, out: Path) -> Path:
    """Arithmetic intensity against achieved FLOP/s of every step, under the GPU's two roofs."""
    steps = run.steps(["flops", "bytes", "gpu_time_s", "num_prefill_tokens"])
    peak, bandwidth = run.roofs()
    ok = (steps["bytes"] > 0) & (steps["gpu_time_s"] > 0)
    intensity = steps["flops"][ok] / steps["bytes"][ok]
    achieved = steps["flops"][ok] / steps["gpu_time_s"][ok]
    prefill = steps["num_prefill_tokens"][ok] > 0
    fig, ax = plt.subplots(figsize=(7.5, 5))
    rng = np.random.default_rng(0)
    for mask, colour, name in ((~prefill, DECODE, "decode-only steps"), (prefill, PREFILL, "steps with prefill")):
        idx = np.flatnonzero(mask)
        if idx.size > MAX_POINTS:
            idx = np.sort(rng.choice(idx, MAX_POINTS, replace=False))
        ax.scatter(intensity[idx], achieved[idx], s=5, alpha=0.35, color=colour, lw=0,
                   label=f"{name} ({mask.sum():,})")
    lo = max(min(intensity.min(initial=1.0), peak / bandwidth) / 4, 0.1)
    hi = max(intensity.max(initial=1.0), peak / bandwidth) * 4
    x = np.geomspace(lo, hi, 200)
    ax.plot(x, np.minimum(peak, x * bandwidth), color=ROOF, lw=1.5, label="roofline (datasheet peaks)")
    ridge = peak / bandwidth
    ax.axvline(ridge, color=ROOF, lw=0.8, ls=":")
    ax.annotate(f"ridge {ridge:,.0f} FLOP/B", (ridge, peak), xytext=(6, -14),
                textcoords="offset points", fontsize=8, color=ROOF)
    ax.annotate(f"{peak / 1e12:,.0f} TFLOP/s", (hi, peak), xytext=(-4, 4), textcoords="offset points",
                ha="right", fontsize=8, color=ROOF)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(min(achieved.min(initial=peak), lo * bandwidth) / 2, peak * 2)
    x_label = np.sqrt(lo * ridge / 4)
    (x0, y0), (x1, y1) = ax.transData.transform([(lo, lo * bandwidth), (ridge, peak)])
    ax.annotate(f"HBM {bandwidth / 1e12:,.2f} TB/s", (x_label, x_label * bandwidth), xytext=(-8, 8),
                textcoords="offset points", fontsize=8, color=ROOF, ha="center",
                rotation=np.degrees(np.arctan2(y1 - y0, x1 - x0)), rotation_mode="anchor")
    ax.set_xlabel("arithmetic intensity (FLOP per byte moved, per GPU)")
    ax.set_ylabel("achieved FLOP/s per GPU (step FLOPs / GPU time)")
    util = run.summary["utilization"]
    ax.set_title(f"Roofline of every engine step: {run.label}\n"
                 f"MFU while busy {util['mfu_while_busy']:.1%}, HBM bandwidth while busy "
                 f"{util['memory_bandwidth_utilization_while_busy']:.1%}")
    ax.legend(loc="lower right", markerscale=3)
    return save(fig, out)


def operator_time(run: Run, out: Path) -> Path:
    """Where GPU time goes: share by operator class (prefill vs decode steps), and mean
    decode-step time by operator class as the batch grows."""
    steps = run.steps()
    ops = op_classes(steps)
    prefill = steps["num_prefill_tokens"] > 0
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4), gridspec_kw={"width_ratios": [1, 1.3]})
    groups = (("all steps", np.ones_like(prefill)), ("steps with prefill", prefill),
              ("decode-only steps", ~prefill))
    names = []
    for row, (name, mask) in enumerate(groups):
        times = np.array([steps[f"{op}_time_s"][mask].sum() for op in ops])
        names.append(f"{name}\n{times.sum():,.1f} s of GPU time")
        shares = times / times.sum() if times.sum() > 0 else times
        left_edge = 0.0
        for i, (op, share) in enumerate(zip(ops, shares)):
            left.barh(row, share, left=left_edge, color=operator_colour(op, i),
                      label=op if row == 0 else None)
            if share >= 0.06:
                left.text(left_edge + share / 2, row, f"{share:.0%}", ha="center", va="center",
                          fontsize=7, color="white")
            left_edge += share
    left.set_yticks(range(len(groups)), names)
    left.invert_yaxis()
    left.set_xlim(0, 1)
    left.xaxis.set_major_formatter(PercentFormatter(1.0))
    left.set_xlabel("share of GPU time")
    left.set_title("GPU time by operator class")
    left.grid(False)
    _decode_breakdown(right, steps, ops, ~prefill)
    fig.legend(*left.get_legend_handles_labels(), loc="lower center", ncol=len(ops),
               bbox_to_anchor=(0.5, -0.04))
    fig.suptitle(f"Step time by operator class: {run.label}", y=1.0)
    return save(fig, out)


def _decode_breakdown(ax, steps, ops: list[str], decode: np.ndarray) -> None:
    batch = steps["num_decode_seqs"][decode]
    if batch.size == 0:
        ax.set_title("no decode-only steps")
        return
    edges = np.unique(np.linspace(batch.min(), batch.max() + 1, 25).astype(int))
    which = np.digitize(batch, edges) - 1
    centres, stacks = [], []
    for b in range(len(edges) - 1):
        sel = which == b
        if sel.sum() < 3:
            continue
        centres.append(0.5 * (edges[b] + edges[b + 1] - 1))
        stacks.append([steps[f"{op}_time_s"][decode][sel].mean() * 1e3 for op in ops])
    if not stacks:
        return
    data = np.array(stacks).T
    ax.stackplot(centres, data, colors=[operator_colour(op, i) for i, op in enumerate(ops)])
    ax.set_xlabel("decode batch (requests in the step)")
    ax.set_ylabel("mean GPU time per decode-only step (ms)")
    ax.set_title("Decode-only steps: time by operator as the batch grows")


def dashboard(run: Run, out: Path, num_bins: int = 200) -> Path:
    """Over simulated time: load, tokens/s, batch, KV use, busy vs MFU and bandwidth, power."""
    b = bin_run(run, num_bins)
    t = b.t_s + b.width_s / 2
    panels = 6 if b.power_w is not None else 5
    fig, axes = plt.subplots(panels, 1, figsize=(11, 2.0 * panels), sharex=True)
    ax = axes[0]
    ax.plot(t, b.arrivals_per_s, label="arrivals", color="#1f77b4", lw=1)
    ax.plot(t, b.finished_per_s, label="finished", color="#7f7f7f", lw=1)
    ax.set_ylabel("requests/s")
    ax.legend(**OUTSIDE)
    ax = axes[1]
    ax.plot(t, b.decode_tokens_per_s, label="output (decode) tokens/s", color=DECODE, lw=1)
    ax.plot(t, b.prefill_tokens_per_s, label="prefill tokens/s", color=PREFILL, lw=1, alpha=0.8)
    ax.set_ylabel("tokens/s")
    ax.legend(**OUTSIDE)
    ax = axes[2]
    ax.plot(t, b.running, label="running (batch)", color="#9467bd", lw=1)
    ax.plot(t, b.waiting, label="waiting", color="#8c564b", lw=1)
    ax.set_ylabel("requests\nper replica")
    ax.legend(**OUTSIDE)
    ax = axes[3]
    ax.plot(t, 100 * b.kv_usage, color="#17becf", lw=1)
    ax.set_ylabel("KV cache used %")
    ax.set_ylim(0, 105)
    _efficiency_panel(axes[4], t, b)
    if b.power_w is not None:
        _power_panel(axes[5], t, b.power_w, run.summary["cost_energy"])
    axes[-1].set_xlabel("simulated time (s)")
    s = run.summary
    fig.suptitle(
        f"{s['scenario']}: {run.label}  |  {s['throughput']['output_tokens_per_s']:,.0f} output tok/s,"
        f" TTFT p99 {s['latency_s']['ttft']['p99'] or 0:.2f} s, busy {s['utilization']['busy_fraction']:.0%},"
        f" MFU {s['utilization']['mfu']:.1%}", y=1.0)
    fig.tight_layout()
    return save(fig, out)


def _efficiency_panel(ax, t: np.ndarray, b) -> None:
    busy, mfu, bw = 100 * b.busy, 100 * b.mfu, 100 * b.bandwidth_util
    ax.fill_between(t, np.maximum(mfu, bw), busy, where=busy > np.maximum(mfu, bw), color="#f4c542",
                    alpha=0.35, lw=0, label="gap: busy, but neither\nFLOP/s nor bandwidth\nnear its peak")
    ax.plot(t, busy, color="black", lw=1.2, label="GPU busy\n(what nvidia-smi shows)")
    ax.plot(t, bw, color=DECODE, lw=1, label="HBM bandwidth used")
    ax.plot(t, mfu, color=PREFILL, lw=1, label="MFU")
    ax.set_ylabel("% of time / peak")
    ax.set_ylim(0, 105)
    ax.legend(**OUTSIDE)


def _power_panel(ax, t: np.ndarray, power_w: np.ndarray, cost_energy: dict) -> None:
    model = cost_energy["power_model"]
    ax.plot(t, power_w, color="#c0392b", lw=1, label="modelled power per GPU")
    ax.axhline(model["tdp_w"], color=ROOF, ls="--", lw=0.8, label=f"TDP {model['tdp_w']:.0f} W")
    ax.axhline(model["idle_w"], color=ROOF, ls=":", lw=0.8, label=f"idle {model['idle_w']:.0f} W")
    ax.set_ylim(0, model["tdp_w"] * 1.1)
    ax.set_ylabel("W per GPU")
    jpt = cost_energy.get("joules_per_output_token")
    if jpt:
        ax.set_title(f"{jpt:.3f} J per output token; mean {cost_energy['mean_power_w_per_gpu']:.0f} W"
                     " per GPU (uncalibrated power model)", fontsize=8, loc="left")
    ax.legend(**OUTSIDE)
