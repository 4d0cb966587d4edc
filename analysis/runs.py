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


@dataclass
class Run:
    """One run folder, loaded lazily."""

    path: Path
    summary: dict[str, Any] = field(init=False)
    manifest: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
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
            raise FileNotFoundError(f"{path}: run with output.write_steps=true for step plots")
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
