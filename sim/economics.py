"""Cost and energy of a run: dollars per million tokens, joules per token, tokens/s per watt.

Cost: every GPU of the deployment is rented for the whole simulated duration, busy or not:

    cost_usd = price_per_hour_usd x GPUs x duration_s / 3600

Power, per GPU, during one engine step of duration d that moves F FLOPs and B bytes (per GPU):

    u_c = F / (d x peak_flops)            fraction of the tensor peak of the run's dtype
    u_m = B / (d x memory_bandwidth)      fraction of the datasheet HBM bandwidth
    P   = P_idle + (TDP - P_idle) x min(1, w_c x u_c + w_m x u_m)

and P_idle between steps. This is the utilisation-proportional server model of Fan, Weber and
Barroso ("Power provisioning for a warehouse-sized computer", ISCA 2007) split, as in Hong and
Kim's component model ("An integrated GPU power and performance model", ISCA 2010), into a
compute and a memory term; `P_idle` is the hardware config's `idle_power_w`, the static draw of
a board whose clocks are up but that runs nothing (what it draws between engine steps).

Measured on one H200 (`sim/data/power/h200.json`, fitted by `sim.calibrate.power_fit` to
nvidia-smi's 1-s power averages during real vLLM 0.24.0 runs of Llama-3.1-8B, lined up with
vLLM's per-step log and priced with this simulator's own FLOP and byte accounting):

- P_idle = 138 W (clocks up, no work; the board idles at 79 W with the SM clock parked at
  345 MHz, which it never reaches between steps);
- 0.96 pJ per FLOP at the boost clock and 124 pJ per HBM byte: w_c = 1.69 and w_m = 1.06 of
  the 562 W dynamic range at the bf16 peak and 4.8 TB/s. HBM traffic is expensive: batch-1
  decode streaming weights at about 3.3 TB/s draws 504 W (run b1, predicted +21 W, never
  fitted), and long-context decode at 4 TB/s reaches the 700 W limit, as the calibration's own
  readings show (calibration/data/*_steps.csv);
- dynamic compute power ~ f^1.55 at fixed work per cycle (`clock_exponent`), used by
  `sim.cost.power_cap` to find the clock a step runs at under the limit.

Fit error (per run, mean of the predicted minus measured 1-s samples; each run also predicted
by a fit to the other runs): pois_20 -4.7 W (held out -21 W), off_1k_512 -5.9 W (-13 W),
pois_6 +8.7 W (+25 W), of 555-693 W means; sample rms 14-20 W. The clock exponent is loosely
determined: the leave-one-out fits gave 1.0, 1.75 and 1.55.

Transferred to other GPUs: w_c and w_m as shares of their own (TDP - idle) at their own peaks,
and `idle_power_w` set to the datasheet-era idle reading times the H200's measured ratio
138 / 79 (configs/hardware/*.yaml say which). That the weights carry over is an assumption: no
other GPU's board power was measured. fp8 FLOPs count against the fp8 peak, so they cost half
the energy of bf16 ones (assumed).

The cap binds on prefill-heavy and long-context decode steps, so energy is summed step by step:
the summary reads the step columns back from steps.parquet when the run wrote it
(`energy_from_steps`); without it (`output.write_steps=false`) the energy comes from the run's
FLOP and byte totals, exact while no step reaches the cap and an upper bound otherwise
(`energy_from_totals`). `power_w` is the same formula for each row of steps.parquet (power over
time). A capped step draws TDP; the real board holds 681-693 W on average at its 700 W limit.
NVLink, host CPU and cooling power are not modelled.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

POWER_DATA = Path(__file__).parent / "data" / "power"
MEASURED_ON = "h200"
MEASURED = json.loads((POWER_DATA / f"{MEASURED_ON}.json").read_text())
COMPUTE_POWER_WEIGHT = MEASURED["compute_weight"]  # w_c: (TDP - idle) shares per unit of tensor-peak use
MEMORY_POWER_WEIGHT = MEASURED["memory_weight"]  # w_m: share of (TDP - idle) at 100% of the HBM bandwidth
CLOCK_EXPONENT = MEASURED["clock_exponent"]  # dynamic compute power ~ f^alpha
SECONDS_PER_HOUR = 3600.0
JOULES_PER_KWH = 3.6e6
FORMULA = (
    "P = idle_w + (tdp_w - idle_w) * min(1, compute_weight * flops / (duration_s * peak_flops)"
    " + memory_weight * bytes / (duration_s * memory_bandwidth)), per GPU and step; idle_w between"
    " steps"
)


@dataclass(frozen=True, slots=True)
class PowerModel:
    """One GPU's power as a function of its activity; all figures per GPU."""

    idle_w: float
    tdp_w: float
    peak_flops: float  # FLOP/s of the run's compute dtype (sustained-clock derate applied)
    memory_bandwidth: float  # bytes/s
    compute_weight: float = COMPUTE_POWER_WEIGHT
    memory_weight: float = MEMORY_POWER_WEIGHT

    @property
    def known(self) -> bool:
        return self.tdp_w > 0.0 and self.peak_flops > 0.0 and self.memory_bandwidth > 0.0

    @property
    def dynamic_w(self) -> float:
        return max(self.tdp_w - self.idle_w, 0.0)

    def activity(self, flops: Any, bytes_: Any, duration_s: Any) -> Any:
        """w_c u_c + w_m u_m, uncapped (scalars or NumPy arrays)."""
        duration = np.maximum(np.asarray(duration_s, dtype=np.float64), 1e-30)
        return (
            self.compute_weight * np.asarray(flops) / (duration * self.peak_flops)
            + self.memory_weight * np.asarray(bytes_) / (duration * self.memory_bandwidth)
        )

    def power_w(self, flops: Any, bytes_: Any, duration_s: Any) -> Any:
        """Power during a step (or each of an array of steps), capped at TDP."""
        return self.idle_w + self.dynamic_w * np.minimum(self.activity(flops, bytes_, duration_s), 1.0)

    def energy_from_totals(self, flops: float, bytes_: float, busy_s: float, elapsed_s: float) -> float:
        """One GPU over `elapsed_s`: idle power throughout plus the dynamic energy of steps
        totalling `busy_s`, `flops` and `bytes_` (exact while no step reaches the cap, an
        upper bound otherwise)."""
        dynamic_j = self.dynamic_w * (
            self.compute_weight * flops / self.peak_flops
            + self.memory_weight * bytes_ / self.memory_bandwidth
        )
        return self.idle_w * elapsed_s + min(dynamic_j, self.dynamic_w * busy_s)

    def energy_from_steps(self, flops: Any, bytes_: Any, duration_s: Any, elapsed_s: float) -> float:
        """The same, exact: each step's capped power times its duration, idle elsewhere."""
        duration = np.asarray(duration_s, dtype=np.float64)
        step_j = float((self.power_w(flops, bytes_, duration) * duration).sum())
        return step_j + self.idle_w * max(elapsed_s - float(duration.sum()), 0.0)

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "formula": FORMULA, "source": power_source()}


def cost_energy(
    power: PowerModel,
    price_per_gpu_hour_usd: float,
    num_replicas: int,
    gpus_per_replica: int,
    duration_s: float,
    busy_s: float,
    flops: float,
    bytes_: float,
    output_tokens: float,
    total_tokens: float,
    steps: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The summary's `cost_energy` section. `busy_s`, `flops` and `bytes_` are summed over the
    steps of every replica, per GPU of a replica (all GPUs of a TP group step together);
    `steps`, when given, holds the per-step `flops`, `bytes` and `duration_s` columns."""
    gpus = num_replicas * gpus_per_replica
    cost_usd = price_per_gpu_hour_usd * gpus * duration_s / SECONDS_PER_HOUR
    priced = price_per_gpu_hour_usd > 0.0
    energy_j = method = None
    if power.known and duration_s > 0:
        elapsed = duration_s * num_replicas  # replica-seconds: one GPU of each TP group
        if steps is not None:
            method = "per step, from steps.parquet"
            per_gpu = power.energy_from_steps(steps["flops"], steps["bytes"], steps["duration_s"], elapsed)
        else:
            method = "from run totals: exact unless a step reached TDP, then an upper bound"
            per_gpu = power.energy_from_totals(flops, bytes_, busy_s, elapsed)
        energy_j = per_gpu * gpus_per_replica
    return {
        "gpus": gpus,
        "price_per_gpu_hour_usd": price_per_gpu_hour_usd if priced else None,
        "usd_per_hour": price_per_gpu_hour_usd * gpus if priced else None,
        "cost_usd": cost_usd if priced else None,
        **_per_token_figures(cost_usd if priced else None, energy_j, duration_s, gpus, output_tokens, total_tokens),
        "energy_method": method,
        "power_model": power.describe() if power.known else None,
    }


def power_source() -> str:
    """What the power figures rest on: measured where, transferred how (for summaries)."""
    fit = MEASURED["fit"]
    errors = ", ".join(f"{run} {e['mean_error_w']:+.1f} W" for run, e in fit.items() if run != "static")
    runs = ", ".join(run for d in MEASURED["data"] for run in d["runs"])
    return (
        f"weights measured on one {MEASURED_ON.upper()} (nvidia-smi power during vLLM runs {runs} of"
        f" {MEASURED['model']}; fit mean error per run {errors}; sim/data/power/{MEASURED_ON}.json);"
        f" other GPUs: the same weights on their own TDP, idle and peaks (assumed)"
    )


def _per_token_figures(
    cost_usd: float | None, energy_j: float | None, duration_s: float, gpus: int,
    output_tokens: float, total_tokens: float,
) -> dict[str, Any]:  # fmt: skip
    """The cost and energy figures per token and per GPU (None where a total is unknown)."""
    usd_e6 = None if cost_usd is None else cost_usd * 1e6
    return {
        "usd_per_million_output_tokens": _per(usd_e6, output_tokens),
        "usd_per_million_tokens": _per(usd_e6, total_tokens),
        "energy_j": energy_j,
        "energy_kwh": None if energy_j is None else energy_j / JOULES_PER_KWH,
        "mean_power_w_per_gpu": _per(energy_j, duration_s * gpus),
        "joules_per_output_token": _per(energy_j, output_tokens),
        "kwh_per_million_output_tokens": _per(
            None if energy_j is None else energy_j / JOULES_PER_KWH * 1e6, output_tokens
        ),
        # tokens/s per W of the whole deployment = output tokens per joule
        "output_tokens_per_s_per_w": _per(output_tokens, energy_j),
    }


def _per(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return float(num) / float(den)


def pooled_cost_energy(
    parts: list[dict[str, Any]], duration_s: float, output_tokens: float, total_tokens: float
) -> dict[str, Any]:
    """A deployment of several pools (mixed GPUs, prefill/decode): each pool's `cost_energy`
    (its own price, TDP, idle power and peaks) summed, and the per-token figures taken over the
    sums. `parts` are `cost_energy` results, one per pool, with a `pool` name added."""
    priced = all(p["cost_usd"] is not None for p in parts)
    powered = all(p["energy_j"] is not None for p in parts)
    gpus = sum(p["gpus"] for p in parts)
    cost_usd = sum(p["cost_usd"] for p in parts) if priced else None
    energy_j = sum(p["energy_j"] for p in parts) if powered else None
    usd_per_hour = sum(p["usd_per_hour"] for p in parts) if priced else None
    return {
        "gpus": gpus,
        "price_per_gpu_hour_usd": usd_per_hour / gpus if priced and gpus else None,
        "usd_per_hour": usd_per_hour,
        "cost_usd": cost_usd,
        **_per_token_figures(cost_usd, energy_j, duration_s, gpus, output_tokens, total_tokens),
        "energy_method": "summed over pools: " + "; ".join(f"{p['pool']} {p['energy_method']}" for p in parts),
        # GPU-weighted idle and TDP for the summary line; each pool's own model beside them.
        "power_model": {
            "idle_w": sum(p["power_model"]["idle_w"] * p["gpus"] for p in parts) / gpus,
            "tdp_w": sum(p["power_model"]["tdp_w"] * p["gpus"] for p in parts) / gpus,
            "by_pool": {p["pool"]: p["power_model"] for p in parts},
        }
        if powered
        else None,
        "by_pool": {p["pool"]: {k: p[k] for k in ("gpus", "usd_per_hour", "cost_usd", "energy_j")} for p in parts},
    }
