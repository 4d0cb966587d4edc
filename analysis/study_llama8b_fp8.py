"""Study: is FP8 worth it for Llama-3.1-8B on one H100?

    python -m analysis.study_llama8b_fp8 [--out outputs/studies/llama8b_fp8] [--quick]

Traffic and SLOs come from scenarios/study_llama8b_fp8.yaml. For bf16, FP8 (W8A8) and FP8 with
an FP8 KV cache: the capacity within the SLOs (capacity search, two seeds), a run at that
capacity for dollars and joules per token, a rate sweep (latency-throughput curves) on a shared
rate grid, and a batch-limit sweep under saturating (offline) load for the knee. Writes
table.parquet, README.md (table and answer) and PNGs into the output folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import OmegaConf

from analysis.cli import run_cli
from analysis.runs import read_sweep
from analysis.studies import Study, concat_sweeps, ms, num, provenance, usd, write_table

REPO = Path(__file__).resolve().parents[1]
SCENARIO = "study_llama8b_fp8"
PRECISIONS = {"bf16": "bf16", "fp8": "FP8 (W8A8)", "fp8_kv": "FP8 + FP8 KV cache"}
SWEEP_FRACTIONS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75)  # of the bf16 capacity
BATCH_LIMITS = "8,16,32,64,128,256,512"
COLUMNS = [
    ("label", "precision", str),
    ("capacity", "req/s within SLO", num(".1f")),
    ("seed_spread", "seed spread", num(".1f")),
    ("gain", "vs bf16", lambda v: f"{v:+.0%}"),
    ("output_tokens_per_s", "output tok/s at capacity", num(",.0f")),
    ("usd_per_million_output_tokens", "$ per M output tok", usd),
    ("joules_per_output_token", "J per output tok", num(".3f")),
    ("mfu", "MFU", lambda v: f"{v:.0%}"),
    ("bandwidth", "HBM BW used", lambda v: f"{v:.0%}"),
    ("tpot_p99_s", "TPOT p99 (ms)", ms(".1f")),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "studies" / "llama8b_fp8")
    parser.add_argument("--quick", action="store_true", help="fewer requests and one seed")
    args = parser.parse_args(argv)
    from analysis import plots_run, plots_sweep  # matplotlib: the `plots` extra

    spec = OmegaConf.load(REPO / "scenarios" / f"{SCENARIO}.yaml")
    slo = (float(spec.slo.ttft_s), float(spec.slo.tpot_s))
    requests, seeds = (800, 1) if args.quick else (2000, 2)
    study = Study(args.out, "Is FP8 worth it for Llama-3.1-8B on one H100?")
    base = [f"+scenario={SCENARIO}"]
    found = {p: study.capacity(p, [*base, f"precision={p}"], slo, seeds, requests) for p in PRECISIONS}
    caps = {p: found[p]["capacity_rate"] for p in PRECISIONS}
    runs = {p: study.run(p, [*base, f"precision={p}", f"workload.rate={caps[p]:.4g}",
                             f"workload.num_requests={2 * requests}"]) for p in PRECISIONS}
    rates = ",".join(f"{f * caps['bf16']:.3g}" for f in SWEEP_FRACTIONS)
    latency = study.sweep("rates", [*base, f"precision={','.join(PRECISIONS)}", f"workload.rate={rates}",
                                    f"workload.num_requests={requests}"])
    knee = study.sweep("batch", [*base, f"precision={','.join(PRECISIONS)}", f"scheduler.max_num_seqs={BATCH_LIMITS}",
                                 "workload.arrival=offline", f"workload.num_requests={requests}"])
    knee_table, _ = read_sweep(knee)
    rows = [_row(p, caps, runs[p].summary) | {"seed_spread": found[p]["seed_spread_rate"]}
            for p in PRECISIONS]
    table = concat_sweeps([latency], study.out / "sweep.parquet")
    plots_sweep.latency_throughput(table, study.out / "latency_throughput.png", by=["precision"],
                                   slo_ttft_s=slo[0], slo_tpot_s=slo[1],
                                   title="Llama-3.1-8B on one H100 SXM: latency against throughput by precision")
    plots_sweep.batch_knee(knee_table, study.out / "batch_knee.png", by=["precision"], slo_tpot_s=slo[1],
                           title="Llama-3.1-8B on one H100 SXM, offline load: the batch-size knee by precision")
    plots_sweep.compare_runs(list(runs.values()), study.out / "side_by_side.png", list(PRECISIONS.values()),
                             title="Llama-3.1-8B on one H100 SXM, each precision at its own capacity")
    for p, run in runs.items():
        plots_run.roofline(run, study.out / f"roofline_{p}.png")
        plots_run.operator_time(run, study.out / f"operators_{p}.png")
    plots_run.dashboard(runs["fp8"], study.out / "dashboard_fp8.png")
    write_table(study, rows, COLUMNS, answer(rows, slo, provenance(list(runs.values()))))
    return 0


def _row(p: str, caps: dict, s: dict) -> dict:
    return {
        "precision": p, "label": PRECISIONS[p], "capacity": caps[p], "gain": caps[p] / caps["bf16"] - 1,
        "output_tokens_per_s": s["throughput"]["output_tokens_per_s"],
        "usd_per_million_output_tokens": s["cost_energy"]["usd_per_million_output_tokens"],
        "joules_per_output_token": s["cost_energy"]["joules_per_output_token"],
        "mfu": s["utilization"]["mfu"], "bandwidth": s["utilization"]["memory_bandwidth_utilization"],
        "ttft_p99_s": s["latency_s"]["ttft"]["p99"], "tpot_p99_s": s["latency_s"]["tpot"]["p99"],
    }


def answer(rows: list[dict], slo: tuple[float, float], source: str) -> str:
    bf16, *fp8s = rows
    cost = bf16["usd_per_million_output_tokens"]
    parts = "; ".join(
        f"{r['label']}: {r['capacity']:.1f} req/s ({r['gain']:+.0%}),"
        f" ${r['usd_per_million_output_tokens']:.3f} per M output tokens"
        f" ({1 - r['usd_per_million_output_tokens'] / cost:.0%} less),"
        f" {r['joules_per_output_token']:.3f} J per token" for r in fp8s)
    return (
        f"**Answer** ({source}; the accuracy cost of FP8 is not modelled):"
        f" within TTFT p99 <= {slo[0]:g} s and TPOT p99 <= {slo[1] * 1e3:g} ms, one H100 serves"
        f" {bf16['capacity']:.1f} req/s of chat in bf16 (${cost:.3f} per M output tokens,"
        f" {bf16['joules_per_output_token']:.3f} J per token at capacity). {parts}. Yes, FP8 is worth"
        f" it if its accuracy holds for the task: each GPU carries {min(r['gain'] for r in fp8s):.0%}"
        f" or more traffic within the same SLOs."
    )


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
