"""A scenario's side-by-side answer: the same traffic on several parallel layouts.

A scenario that sets `compare.layouts` (label -> config overrides, `key=value`) and
optionally `compare.concurrency` (closed-loop users per engine to try) runs every layout at
every concurrency after its own run, each into `<run folder>/compare/<label>_c<N>/` with all
of a run's outputs, and prints one table and the answer: the layout with the most output
tokens/s per GPU among the runs whose TPOT p50 meets `slo.tpot_s`. A layout that cannot run
(it does not fit, or the layout is refused) is a row saying why.

The composed config is merged with each layout's overrides here, past Hydra; the run itself
goes through the same `build_run_spec` and `simulate` as any other.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sim.errors import SimError


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    label: str
    concurrency: int | None
    gpus: int = 0
    tokens_per_s_per_gpu: float = 0.0
    tpot_p50_s: float = 0.0
    tpot_p99_s: float = 0.0
    ttft_p99_s: float = 0.0
    usd_per_m_output: float | None = None
    comm_share: float = 0.0
    refused: str = ""

    def meets(self, tpot_s: float) -> bool:
        return not self.refused and self.tpot_p50_s <= tpot_s


def run_comparison(cfg: DictConfig, out_dir: Path) -> str:
    """Run every layout (x concurrency) and return the printed table and answer."""
    from sim.config.build import build_run_spec, resolved_config
    from sim.run import simulate

    layouts: dict[str, list[str]] = OmegaConf.to_container(cfg.compare.layouts, resolve=True)  # type: ignore[assignment]
    levels: list[int | None] = list(cfg.compare.concurrency) or [None]
    rows: list[Row] = []
    mla_notes: dict[str, None] = {}  # which MLA backend priced the runs, measured or assumed
    for label, overrides in layouts.items():
        for level in levels:
            dots = [*overrides, "output.print_summary=false", "output.progress=false", "output.write_steps=false"]
            if level is not None:
                dots.append(f"workload.concurrency={level}")
            variant = OmegaConf.merge(cfg, OmegaConf.from_dotlist(dots))
            try:
                spec = build_run_spec(variant)
                folder = out_dir / "compare" / (f"{label}_c{level}" if level is not None else label)
                folder.mkdir(parents=True, exist_ok=True)
                result = simulate(spec, folder, resolved_config(variant))
            except SimError as err:
                rows.append(Row(label, level, refused=str(err).split(". ")[0]))
                continue
            if not result.complete:  # interrupted: what ran so far
                return format_comparison(rows, float(cfg.slo.tpot_s), "interrupted")
            rows.append(_row(label, level, result.summary))
            if note := result.summary.get("assumptions", {}).get("mla_attention"):
                mla_notes[note] = None
    text = format_comparison(rows, float(cfg.slo.tpot_s), str(cfg.compare.metric_note))
    return "\n".join([text, *(f"mla decode: {note}" for note in mla_notes)])


def _row(label: str, level: int | None, summary: dict[str, Any]) -> Row:
    cost = summary["cost_energy"]
    shares = summary.get("gpu_time_share_by_operator", {})
    return Row(
        label=label,
        concurrency=level,
        gpus=int(cost["gpus"]),
        tokens_per_s_per_gpu=summary["throughput"]["output_tokens_per_s_per_gpu"],
        tpot_p50_s=summary["latency_s"]["tpot"]["p50"],
        tpot_p99_s=summary["latency_s"]["tpot"]["p99"],
        ttft_p99_s=summary["latency_s"]["ttft"]["p99"],
        usd_per_m_output=cost.get("usd_per_million_output_tokens"),
        comm_share=shares.get("allreduce", 0.0),
    )


def format_comparison(rows: list[Row], tpot_s: float, note: str = "") -> str:
    lines = [
        "",
        f"== layouts compared (TPOT target p50 <= {tpot_s * 1e3:.0f} ms)",
        f"{'layout':<14} {'users':>6} {'GPUs':>5} {'out tok/s/GPU':>14} {'TPOT p50':>9} {'TPOT p99':>9}"
        f" {'TTFT p99':>9} {'$/M out':>8} {'comm':>6}  meets",
    ]
    for r in rows:
        users = "-" if r.concurrency is None else str(r.concurrency)
        if r.refused:
            lines.append(f"{r.label:<14} {users:>6}  refused: {r.refused}")
            continue
        usd = f"{r.usd_per_m_output:.2f}" if r.usd_per_m_output is not None else "-"
        lines.append(
            f"{r.label:<14} {users:>6} {r.gpus:>5} {r.tokens_per_s_per_gpu:>14,.0f} {r.tpot_p50_s * 1e3:>7.1f}ms"
            f" {r.tpot_p99_s * 1e3:>7.1f}ms {r.ttft_p99_s * 1e3:>7.0f}ms {usd:>8} {r.comm_share:>6.0%}  "
            + ("yes" if r.meets(tpot_s) else "no")
        )
    lines.append("(comm: share of GPU time in TP all-reduce, EP dispatch/combine and stage sends;"
                 " links between GPUs and nodes are assumed, not measured)")
    best: dict[str, Row] = {}
    for r in rows:
        if r.meets(tpot_s) and (r.label not in best or r.tokens_per_s_per_gpu > best[r.label].tokens_per_s_per_gpu):
            best[r.label] = r
    if not best:
        lines.append(f"answer: no layout meets TPOT p50 <= {tpot_s * 1e3:.0f} ms at the loads tried")
        return "\n".join(lines)
    ranked = sorted(best.values(), key=lambda r: -r.tokens_per_s_per_gpu)
    top = ranked[0]
    others = ", ".join(f"{r.label} {r.tokens_per_s_per_gpu:,.0f}" for r in ranked[1:])
    lines.append(
        f"answer: {top.label} gives the most output tokens/s per GPU within TPOT p50 <= {tpot_s * 1e3:.0f} ms:"
        f" {top.tokens_per_s_per_gpu:,.0f}" + (f" (then {others})" if others else "")
        + (f"; {note}" if note else "")
    )
    missing = [label for label in dict.fromkeys(r.label for r in rows) if label not in best]
    if missing:
        lines.append(f"        never within the target: {', '.join(missing)}")
    return "\n".join(lines)
