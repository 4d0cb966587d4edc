"""Fit the fused-MoE grouped GEMM and the MLA decode curves to one GPU's kernel timings.

    python -m sim.calibrate.moe_mla_fit --hardware h200 \\
        --moe calibration/data/h200_fused_moe.csv --mla calibration/data/h200_mla_triton.csv \\
        [--write sim/data/profiles/h200.json]

The CSVs come from calibration/measure_fused_moe_mla.py (Triton kernels of vLLM's fused_moe
and TRITON_MLA designs, timed inside CUDA graphs). Each row is rebuilt with the cost model's
own records, so a fitted curve means what sim.cost.moe / sim.cost.mla use it for:

- `grouped_gemm.<dtype>` (`sim.cost.moe.GroupedGemmCurve`), one per GEMM dtype: every row's
  w13 and w2 launch from its measured routing (experts hit, rows, rows after block padding,
  the block sizes it ran with, hence its programs);
- `attention_decode_mla` (`sim.cost.mla.MlaDecodeCurve`): the absorbed decode at 16 and 128
  heads, FLOPs and latent bytes from `MlaAttentionCoefficients`.

Residuals are relative (log), as in sim.calibrate.fit. With --write the curves, their fit
errors (`fit_errors.grouped_gemm_<dtype>`, `fit_errors.attention_decode_mla`) and
`moe_mla_measured_on` are merged into the profile; every other key is kept. Without it the
fitted JSON is printed.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sim.calibrate.fit import FitError, _least_squares
from sim.catalog import hardware_spec_from_config, load_catalog_entry
from sim.cost.efficiency import tensor_peak_flops
from sim.cost.mla import MlaAttentionCoefficients, MlaDecodeCurve, MlaShapes
from sim.cost.moe import GroupedGemm, GroupedGemmCurve, expert_gemms
from sim.cost.operators import TensorFormats
from sim.errors import SimError
from sim.hardware_spec import HardwareSpec
from sim.precision import PrecisionSpec

GEMM_BYTES = {"bf16": 2, "fp8": 1}  # weights and activations of the measured kernels
# DeepSeek-V3's MLA (kv_lora_rank 512, rope 64, nope 128, v 128), as the measurement runs it
DEEPSEEK_MLA = dict(hidden=7168, kv_lora_rank=512, q_lora_rank=1536, nope=128, rope=64, v_dim=128)


@dataclass(frozen=True, slots=True)
class MoeSample:
    name: str
    dtype: str
    launch: GroupedGemm
    seconds: float


@dataclass(frozen=True, slots=True)
class MlaSample:
    name: str
    flops: float
    bytes: float
    num_seqs: int
    seconds: float


def moe_samples(rows: Sequence[dict[str, str]]) -> list[MoeSample]:
    """Two launches (w13, w2) per measured row."""
    out = []
    for r in rows:
        dtype, h, i = r["dtype"], int(r["hidden"]), int(r["width"])
        rows_, hit, padded = float(r["rows"]), float(r["hit"]), float(r["padded_rows"])
        blocks, b = (int(r["block_m"]), int(r["block_n"]), int(r["block_k"])), GEMM_BYTES[dtype]
        gemms = expert_gemms(rows_, hit, h, i, dtype, b, b)  # the cost model's own records
        for gemm, g, ms in zip(("w13", "w2"), gemms, (r["ms_w13"], r["ms_w2"])):
            launch = GroupedGemm.of(g, padded, blocks, b)
            name = f"{r['shape']} {dtype} {gemm} T={r['tokens']}"
            out.append(MoeSample(name, dtype, launch, float(ms) * 1e-3))
    return out


def mla_samples(rows: Sequence[dict[str, str]], hardware: HardwareSpec) -> list[MlaSample]:
    formats = TensorFormats.resolve(PrecisionSpec("bf16", "bf16", "bf16", "bf16"), hardware)
    out = []
    for r in rows:
        heads, batch, context = int(r["heads"]), int(r["batch"]), int(r["context"])
        coeffs = MlaAttentionCoefficients.from_shapes(MlaShapes(heads=heads, **DEEPSEEK_MLA), formats)
        flops, nbytes = coeffs.decode(batch, batch * (context - 1))  # `context` rows attended
        name = f"mla heads={heads} batch={batch} context={context}"
        out.append(MlaSample(name, flops, nbytes, batch, float(r["ms_attention"]) * 1e-3))
    return out


# fixed, compute and memory efficiency, half point (in-flight bytes / streams), ridge p
_BOUNDS = ([0.0, 0.01, 0.05, 0.0, 1.0], [5e-4, 1.0, 1.0, 1e9, 30.0])


def fit_grouped_gemm(
    samples: Sequence[MoeSample], peak: float, bandwidth: float
) -> tuple[GroupedGemmCurve, FitError, np.ndarray]:
    """One dtype's curve, its fit error and each sample's prediction (seconds)."""
    measured = np.array([s.seconds for s in samples])

    def predict(x: np.ndarray) -> np.ndarray:
        c = GroupedGemmCurve(*map(float, x))
        return np.array([c.time(s.launch, peak, bandwidth).time_s for s in samples])

    lower, upper = _BOUNDS
    x = _least_squares(predict, measured, [3e-6, 0.7, 0.9, 1e6, 3.0, 20.0], lower + [0.0], upper + [1e4])
    return GroupedGemmCurve(*map(float, x)), FitError.of(predict(x), measured), predict(x)


def fit_mla_decode(
    samples: Sequence[MlaSample], peak: float, bandwidth: float
) -> tuple[MlaDecodeCurve, FitError, np.ndarray]:
    measured = np.array([s.seconds for s in samples])

    def predict(x: np.ndarray) -> np.ndarray:
        c = MlaDecodeCurve(*map(float, x))
        return np.array([c.time(s.flops, s.bytes, s.num_seqs, peak, bandwidth).time_s for s in samples])

    x = _least_squares(predict, measured, [10e-6, 0.1, 0.8, 100.0, 4.0], *_BOUNDS)
    return MlaDecodeCurve(*map(float, x)), FitError.of(predict(x), measured), predict(x)


def _read(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise SimError(f"no measurement file {path}; run calibration/measure_fused_moe_mla.py first")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def fit_sections(hardware: HardwareSpec, moe_csv: Path, mla_csv: Path) -> dict[str, Any]:
    """The profile keys this fitter owns: curves, fit errors, where they were measured."""
    bw = hardware.memory_bandwidth
    out: dict[str, Any] = {"grouped_gemm": {}, "fit_errors": {}}
    samples = moe_samples(_read(moe_csv))
    for dtype in sorted({s.dtype for s in samples}):
        peak = tensor_peak_flops(hardware.peak_flops, dtype)
        curve, error, _ = fit_grouped_gemm([s for s in samples if s.dtype == dtype], peak, bw)
        out["grouped_gemm"][dtype] = asdict(curve)
        out["fit_errors"][f"grouped_gemm_{dtype}"] = error.as_dict()
    bf16_peak = tensor_peak_flops(hardware.peak_flops, "bf16")
    curve, error, _ = fit_mla_decode(mla_samples(_read(mla_csv), hardware), bf16_peak, bw)
    out["attention_decode_mla"] = asdict(curve)
    out["fit_errors"]["attention_decode_mla"] = error.as_dict()
    out["moe_mla_measured_on"] = (
        f"{hardware.name}: Triton kernels of vLLM's fused_moe and TRITON_MLA designs"
        f" ({moe_csv.name}, {mla_csv.name}; calibration/measure_fused_moe_mla.py)"
    )
    return out


def merge_into_profile(path: Path, sections: dict[str, Any]) -> None:
    profile = json.loads(path.read_text())
    profile.setdefault("fit_errors", {}).update(sections["fit_errors"])
    for key in ("grouped_gemm", "attention_decode_mla", "moe_mla_measured_on"):
        profile[key] = sections[key]
    path.write_text(json.dumps(profile, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hardware", default="h200", help="the catalog GPU the CSVs were measured on")
    p.add_argument("--moe", type=Path, default=Path("calibration/data/h200_fused_moe.csv"))
    p.add_argument("--mla", type=Path, default=Path("calibration/data/h200_mla_triton.csv"))
    p.add_argument("--write", type=Path, default=None, help="a profile JSON to merge the fits into")
    args = p.parse_args(argv)
    try:
        hardware = hardware_spec_from_config(load_catalog_entry("hardware", args.hardware))
        sections = fit_sections(hardware, args.moe, args.mla)
    except SimError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.write:
        merge_into_profile(args.write, sections)
    print(json.dumps(sections, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
