"""Does speculative decoding pay, and up to what load? The run's workload repeated at each of
`speculative.compare_rates`, once without speculation and once with the run's method, same
seed (so the same requests arrive, only faster), and the answer in one sentence.

Per rate: TPOT p50 and p99, TTFT p99, output tokens/s, the mean number of running requests
(the batch, time-weighted over the steps), the acceptance rate, and the speed-up of median
TPOT (off / on). Speculation "stops paying" at the first rate where that speed-up falls below
`RELIABLE_SPEEDUP` (the p90 error of the simulator's verify-step cost, measured on the H200:
below it a gain cannot be told from none) or where the speculative run misses an SLO the
plain one meets. Each run's outputs are kept
under `<run folder>/compare/rate=<r>,speculative=<off|method>/`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.parquet as pq

from sim.errors import ConfigError

if TYPE_CHECKING:
    from sim.config.build import RunSpec

RATE_ARRIVALS = ("poisson", "constant", "gamma", "diurnal")
# 1 + the p90 error of the verify / decode step-time ratio on the H200 (10.0%,
# analysis/validate_spec_verify.py calibration/data/h200_spec_verify.csv).
RELIABLE_SPEEDUP = 1.10


def compare_speculative(spec: RunSpec, out_dir: Path) -> dict[str, Any]:
    """Run the comparison grid; returns summary.json's `speculative_comparison`."""
    from sim.run import simulate  # sim.run calls this module: import at use

    speculative = spec.speculative
    assert speculative is not None and speculative.target_memory is not None
    if spec.workload.arrival not in RATE_ARRIVALS:
        raise ConfigError(
            f"speculative.compare_rates needs a workload driven by a rate ({', '.join(RATE_ARRIVALS)}),"
            f" not workload.arrival={spec.workload.arrival}"
        )
    quiet = dict(print_summary=False, progress=False, write_steps=True, horizon_s=None)
    rows = []
    for rate in speculative.compare_rates:
        workload = dataclasses.replace(spec.workload, rate=float(rate), duration_s=None)
        runs = {
            "off": dataclasses.replace(
                spec, workload=workload, speculative=None, memory=speculative.target_memory, **quiet
            ),
            "on": dataclasses.replace(
                spec, workload=workload, **quiet,
                speculative=dataclasses.replace(speculative, compare_rates=()),
            ),
        }
        row: dict[str, Any] = {"rate": float(rate)}
        for label, run in runs.items():
            name = f"rate={rate:g},speculative={'off' if label == 'off' else speculative.method}"
            folder = out_dir / name
            result = simulate(run, folder, {"comparison_of": spec.scenario_name, "run": name})
            row[label] = _figures(result.summary, folder)
        row["tpot_p50_speedup"] = _ratio(row["off"]["tpot_p50_s"], row["on"]["tpot_p50_s"])
        row["output_tokens_per_s_gain"] = _ratio(
            row["on"]["output_tokens_per_s"], row["off"]["output_tokens_per_s"]
        )
        rows.append(row)
    return {
        "method": speculative.method,
        "num_speculative_tokens": speculative.decode.num_speculative_tokens,
        "rows": rows,
        "answer": answer(speculative.method, speculative.decode.num_speculative_tokens, rows),
    }


def _figures(summary: dict[str, Any], folder: Path) -> dict[str, Any]:
    lat = summary["latency_s"]
    req = summary["requests"]
    steps = pq.read_table(folder / "steps.parquet", columns=["duration_s", "num_running"])
    duration = steps.column("duration_s").to_numpy()
    running = steps.column("num_running").to_numpy()
    spec = summary.get("speculative") or {}
    return {
        "tpot_p50_s": lat["tpot"]["p50"],
        "tpot_p99_s": lat["tpot"]["p99"],
        "ttft_p99_s": lat["ttft"]["p99"],
        "output_tokens_per_s": summary["throughput"]["output_tokens_per_s"],
        "mean_batch": float(np.dot(duration, running) / duration.sum()) if duration.sum() > 0 else 0.0,
        "meets_slo": not _misses(summary),
        "unfinished_or_rejected": req["unfinished"] + req["rejected"],
        "acceptance_rate": spec.get("acceptance_rate"),
        "mean_acceptance_length": spec.get("mean_acceptance_length"),
    }


def _misses(summary: dict[str, Any]) -> bool:
    slo = summary["goodput"]["slo"]
    lat = summary["latency_s"]
    ttft, tpot = lat["ttft"]["p99"], lat["tpot"]["p99"]
    req = summary["requests"]
    return bool(
        req["unfinished"] or req["rejected"]
        or (ttft is not None and ttft > slo["ttft_s"]) or (tpot is not None and tpot > slo["tpot_s"])
    )  # fmt: skip


def answer(method: str, k: int, rows: list[dict[str, Any]]) -> str:
    """One paragraph: the gain at the lowest load, how it falls, where it stops paying."""
    if not rows:
        return "no rate was compared"
    first, last = rows[0], rows[-1]
    name = f"{method} (k={k})"
    text = (
        f"{name} cuts median TPOT {first['tpot_p50_speedup']:.2f}x at {first['rate']:g} req/s"
        f" (mean batch {first['off']['mean_batch']:.0f} without, {first['on']['mean_batch']:.0f} with),"
        f" {last['tpot_p50_speedup']:.2f}x at {last['rate']:g} req/s (batch"
        f" {last['off']['mean_batch']:.0f} / {last['on']['mean_batch']:.0f})"
    )
    stop = next((r for r in rows if not _pays(r)), None)
    if stop is None:
        return text + f"; it pays at every rate compared, up to {last['rate']:g} req/s."
    if stop is first:
        return text + f"; it does not pay even at {first['rate']:g} req/s."
    speedup = stop["tpot_p50_speedup"]
    if speedup is not None and speedup < 1.0:
        why = f"median TPOT {speedup:.2f}x: slower"
    elif speedup is not None and speedup < RELIABLE_SPEEDUP:
        why = (
            f"median TPOT {speedup:.2f}x, within the {RELIABLE_SPEEDUP - 1:.0%} p90 error of the"
            " verify-step cost measured on the H200"
        )
    else:
        why = "the speculative run misses an SLO the plain one meets"
    batch = f"batch {stop['off']['mean_batch']:.0f} / {stop['on']['mean_batch']:.0f}"
    return text + f"; it stops paying at {stop['rate']:g} req/s ({why}; {batch})."


def _pays(row: dict[str, Any]) -> bool:
    speedup = row["tpot_p50_speedup"]
    if speedup is None or speedup < RELIABLE_SPEEDUP:
        return False
    return row["on"]["meets_slo"] or not row["off"]["meets_slo"]


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None
