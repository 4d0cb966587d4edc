"""Matplotlib on the Agg backend (files only, no display) and the colours every plot shares."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

PREFILL = "#d95f02"  # steps that carry prefill tokens
DECODE = "#1b9e77"  # decode-only steps
ROOF = "#444444"
SLO = "#c0392b"
SERIES = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
OPERATOR = {
    "qkv_proj": "#4e79a7",
    "attention_prefill": "#f28e2b",
    "attention_decode": "#e15759",
    "o_proj": "#76b7b2",
    "mlp": "#59a14f",
    "lm_head": "#edc948",
    "elementwise": "#b07aa1",
    "allreduce": "#9c755f",
}

plt.rcParams.update(
    {
        "figure.dpi": 110,
        "savefig.dpi": 110,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "font.size": 9,
        "axes.titlesize": 10,
        "legend.fontsize": 8,
        "legend.frameon": False,
    }
)


def save(fig: plt.Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def operator_colour(op: str, i: int) -> str:
    return OPERATOR.get(op, SERIES[i % len(SERIES)])
