"""Step-time predictions for shapes given in a CSV, to check the cost model against measurements.

    python -m sim.step model=llama3_8b hardware=h100_sxm parallel.tp=1 precision=bf16 \\
        shapes=IN.csv out=OUT.csv

`IN.csv` has columns `phase` (prefill or decode), `batch` and `ctx`:
- a decode row is `batch` requests each generating one token with `ctx` tokens already cached;
- a prefill row is `batch` requests each with a fresh `ctx`-token prompt, computed in one step.

`OUT.csv` repeats them and adds `forward_ms` (GPU time of one forward pass on one GPU of the TP
group, TP communication included, engine CPU overhead excluded), `step_ms` (with it), `bound`,
and per operator class `<op>_ms`. Any other `key=value` argument is a Hydra override of the
simulator's config (model, hardware, precision, parallel, cost, ...).
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from sim.cost.batch import BatchSummary
from sim.cost.breakdown import OP_CLASSES, StepCost
from sim.errors import ConfigError, SimError, TraceError

PHASES = ("prefill", "decode")


@dataclass(frozen=True, slots=True)
class StepShape:
    phase: str
    batch: int
    ctx: int

    def batch_summary(self) -> BatchSummary:
        b, c = self.batch, self.ctx
        if self.phase == "decode":
            return BatchSummary(num_decode_seqs=b, decode_context_tokens=b * c)
        return BatchSummary(
            num_prefill_tokens=b * c,
            num_prefill_seqs=b,
            prefill_attn_pairs=b * c * (c + 1) / 2,
            prefill_kv_tokens=b * c,
        )


def read_shapes(path: Path) -> list[StepShape]:
    """Rows of `phase,batch,ctx`; errors name the file and line."""
    if not path.is_file():
        raise TraceError(f"{path}: no such file (shapes=... must name a CSV with phase,batch,ctx)")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"phase", "batch", "ctx"} - set(reader.fieldnames or ())
        if missing:
            raise TraceError(
                f"{path}:1: missing column(s) {', '.join(sorted(missing))};"
                f" found {', '.join(reader.fieldnames or ()) or 'none'}"
            )
        shapes = [_parse_row(path, line, row) for line, row in enumerate(reader, start=2)]
    if not shapes:
        raise TraceError(f"{path}: no rows")
    return shapes


def _parse_row(path: Path, line: int, row: dict[str, str]) -> StepShape:
    phase = (row["phase"] or "").strip()
    if phase not in PHASES:
        raise TraceError(f"{path}:{line}: phase {phase!r} is not one of {', '.join(PHASES)}")
    try:
        batch, ctx = int(row["batch"]), int(row["ctx"])
    except (TypeError, ValueError):
        raise TraceError(f"{path}:{line}: batch and ctx must be integers") from None
    if batch <= 0 or ctx <= 0:
        raise TraceError(f"{path}:{line}: batch and ctx must be positive")
    return StepShape(phase, batch, ctx)


def prediction_row(shape: StepShape, cost: StepCost) -> dict[str, object]:
    row: dict[str, object] = {
        "phase": shape.phase,
        "batch": shape.batch,
        "ctx": shape.ctx,
        "forward_ms": cost.gpu_time_s * 1e3,
        "step_ms": cost.time_s * 1e3,
        "bound": cost.bound,
    }
    for name, op in zip(OP_CLASSES, cost.ops):
        row[f"{name}_ms"] = op.time_s * 1e3
    return row


def predict(cost_model, shapes: Iterable[StepShape]) -> list[dict[str, object]]:
    """One output row per shape, priced by a cost model (anything with `step_cost`)."""
    return [prediction_row(s, cost_model.step_cost(s.batch_summary())) for s in shapes]


def build_step_cost_model(overrides: Sequence[str]):
    """Compose the simulator's config with these overrides and build its cost model."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from sim.catalog import (
        hardware_spec_from_config,
        model_spec_from_config,
        precision_spec_from_config,
    )
    from sim.config.scenarios import CONFIG_DIR
    from sim.config.schema import register_schemas
    from sim.cost.roofline import build_cost_model

    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=list(overrides))
    model = model_spec_from_config(cfg.model)
    hardware = hardware_spec_from_config(cfg.hardware)
    precision = precision_spec_from_config(cfg.precision, hardware)
    return build_cost_model(model, hardware, precision, cfg.parallel.tp, OmegaConf.to_object(cfg.cost))


def write_rows(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def main(argv: Sequence[str]) -> int:
    shapes_path = out_path = None
    overrides = []
    for arg in argv:
        if arg.startswith("shapes="):
            shapes_path = Path(arg.split("=", 1)[1])
        elif arg.startswith("out="):
            out_path = Path(arg.split("=", 1)[1])
        elif arg in ("-h", "--help"):
            print(__doc__)
            return 0
        else:
            overrides.append(arg)
    try:
        if shapes_path is None or out_path is None:
            raise ConfigError("give shapes=IN.csv and out=OUT.csv (see python -m sim.step --help)")
        shapes = read_shapes(shapes_path)
        rows = predict(build_step_cost_model(overrides), shapes)
    except SimError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # Hydra composition errors: unknown group option or key
        if type(err).__module__.startswith(("hydra", "omegaconf")):
            print(f"error: {err}", file=sys.stderr)
            return 2
        raise
    write_rows(out_path, rows)
    print(f"wrote {len(rows)} predictions to {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
