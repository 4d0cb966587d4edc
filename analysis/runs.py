"""Reading a run's outputs (summary.json, manifest.json, steps.parquet, requests.parquet).

Only files: nothing here imports the simulator. A table is a dict of NumPy columns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

Columns = dict[str, np.ndarray]


class AnalysisError(Exception):
    """An input analysis/ cannot use: printed as one `error: ...` line (exit code 2)."""


def _describe_folder(path: Path) -> str:
    """Why `path` is not a run folder, and what to give instead."""
    if not path.exists():
        return f"{path}: no such file or folder"
    if path.is_file():
        return f"{path} is a file, not a run folder (one with summary.json, from python -m sim)"
    jobs = sorted(p.parents[1] for p in path.glob("*/.hydra/overrides.yaml"))
    if jobs or (path / "multirun.yaml").exists():
        example = f", e.g. {jobs[0]}" if jobs else ""
        return (
            f"{path} is a sweep (multirun) folder, not a run: pass one of its job folders{example},"
            f" or collect it with `python -m sim.sweep.collect {path}` and plot the table"
            " with `latency` or `knee`"
        )
    return f"{path} has no summary.json: not a run folder of python -m sim (or the run failed)"


@dataclass
class Run:
    """One run folder, loaded lazily."""

    path: Path
    summary: dict[str, Any] = field(init=False)
    manifest: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not (self.path / "summary.json").is_file():
            raise AnalysisError(_describe_folder(self.path))
        self.summary = json.loads((self.path / "summary.json").read_text())
        manifest = self.path / "manifest.json"
        self.manifest = json.loads(manifest.read_text()) if manifest.exists() else {}

    @property
    def label(self) -> str:
        s = self.summary["setup"]
        return f"{s['hardware']} {s['precision']} TP{s['tp']}x{s['replicas']}"

    def steps(self, columns: list[str] | None = None) -> Columns:
        path = self.path / "steps.parquet"
        if not path.exists():
            raise AnalysisError(
                f"{self.path} has no steps.parquet: this plot needs the per-step table; re-run with"
                " output.write_steps=true (the default; sweeps and capacity probes turn it off)"
            )
        return read_columns(path, columns)

    def requests(self, columns: list[str] | None = None) -> Columns:
        return read_columns(self.path / "requests.parquet", columns)

    def roofs(self) -> tuple[float, float]:
        """(peak FLOP/s, bytes/s) per GPU, as the run's summary used them."""
        roofs = self.summary.get("roofs")
        if roofs:
            return roofs["peak_flops_per_gpu"], roofs["memory_bandwidth_per_gpu"]
        hw = self.manifest["resolved_config"]["hardware"]  # older runs: datasheet peaks
        dtype = self.manifest["resolved_config"]["precision"]["activation_dtype"]
        clock = hw.get("sustained_clock_ratio", 1.0)
        return hw["peak_tflops"][dtype] * 1e12 * clock, hw["memory_bandwidth_tbps"] * 1e12

    @property
    def num_replicas(self) -> int:
        return int(self.summary["setup"]["replicas"])


def read_columns(path: Path, columns: list[str] | None = None) -> Columns:
    table = pq.read_table(path, columns=columns)
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def op_classes(steps: Columns) -> list[str]:
    """Operator classes present in steps.parquet (`<op>_time_s` next to `<op>_flops`)."""
    return [c[: -len("_time_s")] for c in steps if c.endswith("_time_s") and c[:-7] + "_flops" in steps]


def read_sweep(path: Path) -> tuple[Columns, list[str]]:
    """A table written by `python -m sim.sweep.collect` and its swept parameter names."""
    path = Path(path)
    if path.is_dir():
        raise AnalysisError(
            f"{path} is a folder: give the table that `python -m sim.sweep.collect {path}` writes"
            " (sweep.parquet)"
        )
    if not path.is_file():
        raise AnalysisError(f"{path}: no such file")
    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    swept = json.loads(meta.get(b"swept", b"[]"))
    return {n: table.column(n).to_numpy(zero_copy_only=False) for n in table.column_names}, swept


def step_power_w(steps: Columns, power_model: dict[str, Any]) -> np.ndarray:
    """Per-GPU power during each step, by the formula the run's summary states
    (`cost_energy.power_model.formula`): idle plus the activity-weighted dynamic range."""
    d = np.maximum(steps["duration_s"], 1e-30)
    activity = power_model["compute_weight"] * steps["flops"] / (d * power_model["peak_flops"])
    activity += power_model["memory_weight"] * steps["bytes"] / (d * power_model["memory_bandwidth"])
    dynamic = power_model["tdp_w"] - power_model["idle_w"]
    return power_model["idle_w"] + dynamic * np.minimum(activity, 1.0)


OVERLOAD_GOODPUT_FRACTION = 0.5  # as sim.metrics.report: below this share meeting the SLOs


def run_flags(summary: dict[str, Any]) -> list[str]:
    """`MISSES SLO` (a p99 above its SLO) and `OVERLOADED` (requests rejected or unfinished, or
    fewer than half the finished ones within the SLOs), as the printed summary flags them."""
    lat, good, req = summary["latency_s"], summary["goodput"], summary["requests"]
    slo = good["slo"]
    flags = []
    limits = (("ttft", slo["ttft_s"]), ("tpot", slo["tpot_s"]), ("e2e", slo.get("e2e_s")))
    if any(limit is not None and (lat[k]["p99"] or 0) > limit for k, limit in limits):
        flags.append("MISSES SLO")
    fraction = good.get("fraction_of_finished")
    if req["rejected"] + req["unfinished"] or (fraction is not None and fraction < OVERLOAD_GOODPUT_FRACTION):
        flags.append("OVERLOADED")
    return flags


def usd_per_million_goodput_tokens(run: Run) -> float | None:
    """The run's cost over the output tokens of the requests that met the SLOs."""
    cost = (run.summary.get("cost_energy") or {}).get("cost_usd")
    if cost is None or not (run.path / "requests.parquet").exists():
        return None
    r = run.requests(["status", "ttft_s", "tpot_s", "e2e_s", "output_tokens_generated"])
    slo = run.summary["goodput"]["slo"]
    with np.errstate(invalid="ignore"):
        good = (r["status"] == "finished") & (r["ttft_s"] <= slo["ttft_s"])
        good &= (r["tpot_s"] <= slo["tpot_s"]) | np.isnan(r["tpot_s"])
        if slo.get("e2e_s") is not None:
            good &= r["e2e_s"] <= slo["e2e_s"]
    tokens = float(r["output_tokens_generated"][good].sum())
    return cost * 1e6 / tokens if tokens else None
