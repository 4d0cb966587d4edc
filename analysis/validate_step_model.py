"""How far the cost model's step times are from measured ones.

    python analysis/validate_step_model.py calibration/data/h100_sxm_steps.csv \\
        calibration/data/h200_steps.csv [--out errors.csv] [--flat] [--override cost.profile=h100_sxm]
    python analysis/validate_step_model.py calibration/data/h100_sxm_steps.csv \\
        --record sim/data/profiles/h100_sxm.json own

`--record PROFILE KEY` writes the overall error (n, median, p90, max, the files, the command)
into the profile's `validation.KEY`: `own` for the profile on its own GPU's steps (the stated
uncertainty of a calibrated run), `transfer` for it on another GPU of its generation (the
stated uncertainty of a transferred run).

The measured CSV has columns phase, batch, ctx, ms, hardware, model, tp (and optionally
precision, default bf16). `ms` is the GPU time of one forward pass (one GPU of the TP group),
compared with the model's `forward_ms`. Prints the median, 90th-percentile and maximum absolute
relative error per hardware (and per phase, and per precision where not bf16), and which
efficiency source each prediction used.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.errors import SimError
from sim.step import StepShape, build_step_cost_model


@dataclass(frozen=True, slots=True)
class Comparison:
    hardware: str
    model: str
    tp: int
    phase: str
    batch: int
    ctx: int
    measured_ms: float
    predicted_ms: float
    source: str
    precision: str = "bf16"

    @property
    def error(self) -> float:
        return abs(self.predicted_ms / self.measured_ms - 1.0)


def read_measured(paths: list[Path]) -> list[dict[str, str]]:
    rows = []
    for path in paths:
        with path.open(newline="") as f:
            rows += list(csv.DictReader(f))
    return rows


def compare(rows: list[dict[str, str]], extra_overrides: list[str]) -> list[Comparison]:
    groups: dict[tuple[str, str, int, str], list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        key = (r["hardware"], r["model"], int(r.get("tp") or 1), r.get("precision") or "bf16")
        groups[key].append(r)
    out = []
    for (hardware, model, tp, precision), members in sorted(groups.items()):
        cost_model = build_step_cost_model(
            [f"model={model}", f"hardware={hardware}", f"parallel.tp={tp}", f"precision={precision}", *extra_overrides]
        )
        source = f"{cost_model.provenance()['gemm']}; stated: {cost_model.provenance()['cost_model']}"
        for r in members:
            shape = StepShape(r["phase"], int(r["batch"]), int(r["ctx"]))
            predicted = cost_model.step_cost(shape.batch_summary()).gpu_time_s * 1e3
            out.append(
                Comparison(
                    hardware, model, tp, shape.phase, shape.batch, shape.ctx, float(r["ms"]), predicted, source, precision
                )
            )
    return out


def error_table(comparisons: list[Comparison]) -> list[tuple[str, int, float, float, float]]:
    """(group, n, median, p90, max) per hardware, and per hardware and phase."""
    groups: dict[str, list[float]] = defaultdict(list)
    for c in comparisons:
        label = f"{c.hardware} tp{c.tp}" if c.tp > 1 else c.hardware
        groups[label].append(c.error)
        groups[f"{label} {c.phase}"].append(c.error)
        if c.precision != "bf16":
            groups[f"{label} {c.precision}"].append(c.error)
            groups[f"{label} {c.precision} {c.phase}"].append(c.error)
    table = []
    for label in sorted(groups):
        e = np.array(groups[label])
        table.append((label, e.size, float(np.median(e)), float(np.percentile(e, 90)), float(e.max())))
    return table


def record(profile: Path, key: str, comparisons: list[Comparison], measured: list[Path], overrides: list[str]) -> None:
    e = np.array([c.error for c in comparisons])
    raw = json.loads(profile.read_text())
    raw.setdefault("validation", {})[key] = {
        "n": int(e.size),
        "median": float(np.median(e)),
        "p90": float(np.percentile(e, 90)),
        "max": float(e.max()),
        "hardware": sorted({c.hardware for c in comparisons}),
        "steps": [str(p) for p in measured],
        "command": " ".join(["python analysis/validate_step_model.py", *map(str, measured),
                             *(f"--override {o}" for o in overrides), "--record", str(profile), key]),
    }
    profile.write_text(json.dumps(raw, indent=2) + "\n")
    print(f"recorded validation.{key} in {profile}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("measured", type=Path, nargs="+")
    p.add_argument("--out", type=Path, help="write one row per prediction here")
    p.add_argument("--flat", action="store_true", help="use the flat, uncalibrated factors")
    p.add_argument("--override", action="append", default=[], help="extra config override")
    p.add_argument("--record", nargs=2, metavar=("PROFILE", "KEY"), help="write the overall error into PROFILE's validation.KEY")
    args = p.parse_args(argv)
    overrides = list(args.override) + (["cost.efficiency=flat"] if args.flat else [])
    try:
        comparisons = compare(read_measured(args.measured), overrides)
    except (SimError, OSError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{'hardware / phase':<24}{'n':>5}{'median':>9}{'p90':>9}{'max':>9}")
    for label, n, med, p90, mx in error_table(comparisons):
        print(f"{label:<24}{n:>5}{med:>8.1%}{p90:>9.1%}{mx:>9.1%}")
    for source in sorted({(c.hardware, c.source) for c in comparisons}):
        print(f"efficiency source for {source[0]}: {source[1]}")
    if args.record:
        record(Path(args.record[0]), args.record[1], comparisons, args.measured, overrides)
    if args.out:
        with args.out.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["hardware", "model", "tp", "phase", "batch", "ctx", "measured_ms", "predicted_ms", "error"])
            for c in comparisons:
                writer.writerow([c.hardware, c.model, c.tp, c.phase, c.batch, c.ctx, c.measured_ms, c.predicted_ms, c.error])
    return 0


if __name__ == "__main__":
    sys.exit(main())
