"""Study: H100 or H200 for Llama-3.1-70B at our traffic, and how many?

    python -m analysis.study_llama70b_hardware [--out outputs/studies/llama70b_hardware] [--quick]

Traffic and SLOs come from scenarios/study_llama70b_hardware.yaml. For each candidate (GPU and
tensor-parallel size): the capacity of one replica within the SLOs (capacity search, two seeds),
the replicas and GPUs that hold our rate, a rate sweep for latency-throughput curves, and one
run of the sized deployment at our rate for dollars and joules per token. Writes table.parquet,
README.md (table and answer) and PNGs into the output folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import OmegaConf

from analysis.cli import run_cli
from analysis.studies import Study, concat_sweeps, ms, num, provenance, usd, write_table

REPO = Path(__file__).resolve().parents[1]
SCENARIO = "study_llama70b_hardware"
CANDIDATES = {  # tag: (label, overrides)
    "h100_tp4": ("H100 SXM, TP4", ["hardware=h100_sxm", "parallel=tp4"]),
    "h200_tp2": ("H200, TP2", ["hardware=h200", "parallel=tp2"]),
    "h200_tp4": ("H200, TP4", ["hardware=h200", "parallel=tp4"]),
}
SWEEP_FRACTIONS = (0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25)  # of one replica's capacity
COLUMNS = [
    ("candidate", "candidate", str),
    ("capacity_per_replica", "req/s per replica (SLO)", num(".2f")),
    ("seed_spread", "seed spread", num(".2f")),
    ("replicas", "replicas for target", str),
    ("gpus", "GPUs", str),
    ("usd_per_hour", "$/h", usd),
    ("usd_per_million_output_tokens", "$ per M output tok", usd),
    ("joules_per_output_token", "J per output tok", num(".3f")),
    ("ttft_p99_s", "TTFT p99 (ms)", ms()),
    ("tpot_p99_s", "TPOT p99 (ms)", ms(".1f")),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "studies" / "llama70b_hardware")
    parser.add_argument("--quick", action="store_true", help="fewer requests and one seed (minutes less)")
    args = parser.parse_args(argv)
    from analysis import plots_run, plots_sweep  # matplotlib: the `plots` extra

    spec = OmegaConf.load(REPO / "scenarios" / f"{SCENARIO}.yaml")
    target, slo = float(spec.workload.rate), (float(spec.slo.ttft_s), float(spec.slo.tpot_s))
    requests, seeds = (800, 1) if args.quick else (2000, 2)
    study = Study(args.out, "H100 or H200 for Llama-3.1-70B, and how many?")
    base = [f"+scenario={SCENARIO}", "parallel.replicas=1"]
    rows, sweeps, runs = [], [], []
    for tag, (label, overrides) in CANDIDATES.items():
        cap = study.capacity(tag, [*base, *overrides], slo, seeds, requests, target_rate=target, start_rate=4.0)
        per_replica, sizing = cap["capacity_rate"], cap["sizing"]
        rates = ",".join(f"{f * per_replica:.3g}" for f in SWEEP_FRACTIONS)
        sweeps.append(study.sweep(tag, [*base, *overrides, f"workload.rate={rates}",
                                        f"workload.num_requests={requests}"]))
        run = study.run(tag, [f"+scenario={SCENARIO}", *overrides, f"parallel.replicas={sizing['replicas']}",
                              f"workload.num_requests={2 * requests * sizing['replicas']}"])
        runs.append(run)
        s = run.summary
        rows.append({
            "candidate": label, "tag": tag, "capacity_per_replica": per_replica,
            "seed_spread": cap["seed_spread_rate"], "bracket": cap["bracket_width_rate"],
            "replicas": sizing["replicas"], "gpus": sizing["gpus"], "usd_per_hour": sizing["usd_per_hour"],
            "usd_per_million_output_tokens": s["cost_energy"]["usd_per_million_output_tokens"],
            "joules_per_output_token": s["cost_energy"]["joules_per_output_token"],
            "ttft_p99_s": s["latency_s"]["ttft"]["p99"], "tpot_p99_s": s["latency_s"]["tpot"]["p99"],
            "mfu": s["utilization"]["mfu"], "busy": s["utilization"]["busy_fraction"],
        })
        plots_run.dashboard(run, study.out / f"dashboard_{tag}.png")
    table = concat_sweeps(sweeps, study.out / "sweep.parquet")
    plots_sweep.latency_throughput(
        table, study.out / "latency_throughput.png", by=["hardware", "parallel"], slo_ttft_s=slo[0],
        slo_tpot_s=slo[1], title="Llama-3.1-70B, one replica per candidate: latency against throughput")
    labels = [f"{r['candidate']}\n{r['replicas']} x TP = {r['gpus']} GPUs" for r in rows]
    plots_sweep.compare_runs(runs, study.out / "side_by_side.png", labels,
                             title=f"Llama-3.1-70B at {target:g} req/s, each candidate sized to meet the SLOs")
    plots_run.roofline(runs[0], study.out / "roofline_h100_tp4.png")
    plots_run.roofline(runs[1], study.out / "roofline_h200_tp2.png")
    write_table(study, rows, COLUMNS, answer(rows, target, slo, provenance(runs)))
    return 0


def answer(rows: list[dict], target: float, slo: tuple[float, float], source: str) -> str:
    best, runner_up, *rest = sorted(rows, key=lambda r: r["usd_per_hour"])
    margin = runner_up["usd_per_hour"] / best["usd_per_hour"] - 1
    verdict = "level (within 5%) with" if margin < 0.05 else f"{margin:.0%} cheaper than"

    def sized(r: dict) -> str:
        return f"{r['replicas']} replicas = {r['gpus']} GPUs, ${r['usd_per_hour']:,.2f}/h"

    tail = "".join(f"; {r['candidate']} needs {sized(r)}" for r in rest)
    return (
        f"**Answer** ({source}): at {target:g} req/s within TTFT p99 <="
        f" {slo[0]:g} s and TPOT p99 <= {slo[1] * 1e3:g} ms, the cheapest is **{best['candidate']}**"
        f" with {sized(best)}. It is {verdict} {runner_up['candidate']} ({sized(runner_up)}){tail}."
    )


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
