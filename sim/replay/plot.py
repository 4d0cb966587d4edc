"""Measured against simulated CDFs of TTFT, TPOT, ITL and E2E, side by side, as one PNG.

The simulator keeps no per-token gaps, only their distribution (summary.json
`latency_s.itl`), so the simulated ITL appears as its p50/p90/p99 points on the measured CDF's
axes. Needs matplotlib (`pip install -e '.[plots]'`); without it no PNG is written and the
caller says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sim.replay.replay import ReplayResult

PLOT_FILE = "cdf.png"
MEASURED = "#1f77b4"
SIMULATED = "#d62728"


def _ecdf(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values = np.sort(values[np.isfinite(values)])
    return values, np.arange(1, values.size + 1) / max(values.size, 1)


def write_cdf_plot(result: ReplayResult, path: Path | None = None) -> Path | None:
    """The PNG's path, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    path = path or result.out_dir / PLOT_FILE
    run, sim = result.run, result.simulated
    panels = (
        ("TTFT", run.ttft_s, sim.requests["ttft_s"]),
        ("TPOT", run.tpot_s, sim.requests["tpot_s"]),
        ("ITL", run.itl_s, None),
        ("E2E", run.e2e_s, sim.requests["e2e_s"]),
    )
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    for ax, (label, measured, simulated) in zip(axes, panels):
        x, y = _ecdf(measured * 1e3)
        if x.size:
            ax.step(x, y, where="post", color=MEASURED, label="measured")
        if simulated is not None:
            xs, ys = _ecdf(simulated * 1e3)
            ax.step(xs, ys, where="post", color=SIMULATED, label="simulated")
        else:
            itl = sim.summary["latency_s"]["itl"]
            points = [(itl.get(k), q) for k, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))]
            points = [(v * 1e3, q) for v, q in points if v is not None]
            if points:
                ax.plot(*zip(*points), "o--", color=SIMULATED, label="simulated p50/p90/p99")
        positive = x[x > 0]
        if positive.size and positive.max() / positive.min() > 20:
            ax.set_xscale("log")
        ax.set_title(label)
        ax.set_xlabel(f"{label} (ms)")
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("fraction of requests (ITL: of gaps)")
    axes[0].legend(loc="lower right", frameon=False, fontsize=8)
    axes[2].legend(loc="best", frameon=False, fontsize=8)
    fig.suptitle(f"{run.name}: measured vs simulated ({run.num_requests:,} requests)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
