"""Fit a hardware profile from measurement CSVs (the formats calibration/ writes).

    python -m sim.calibrate.profile_fit --hardware h100_sxm \\
        --ops calibration/data/h100_sxm_ops.csv \\
        --gemm-sweep calibration/data/h100_sxm_gemm.csv \\
        --allreduce calibration/data/h200x4_allreduce.csv \\
        [--fp8-attention calibration/data/h200_fp8_attention.csv] \\
        [--alltoall calibration/data/h200x8_alltoall.csv] [--p2p calibration/data/h200x8_p2p.csv] \\
        --out sim/data/profiles/h100_sxm.json

- `--ops`: per-kernel times of whole decode/prefill steps inside CUDA graphs (columns phase,
  batch, ctx, op, op_class, chosen, ms_per_call, ms_per_step, model, tp). Rows with
  chosen=True are the kernels the measured steps ran. GEMM, attention and element-wise
  curves are fitted to them.
- `--gemm-sweep`: GEMMs (dtype, M, K, N, ms). They add shapes and the fp8 curve. Rows timed
  one launch at a time have their launch cost fitted separately and not used for predictions;
  rows with mode=graph (measure_fp8_kernels.py) were timed inside a CUDA graph, as a step's
  GEMMs run, and fit the in-graph fixed cost directly. `m_run`: the rows actually run.
- `--allreduce`: NCCL all-reduce times (tp, bytes, ms); fitted per TP size, and the ring
  extrapolation to other TP sizes fitted across them (`fit_ring_extrapolation`).
- `--alltoall`, `--p2p`: expert-parallel all-to-all (ep, bytes, ms) and pipeline send/recv
  (src, dst, bytes, ms) times; fitted per group size (sim.calibrate.comm_fit) into the
  profile's `alltoall` and `p2p` sections.
- `--fp8-attention`: paged attention over an FP8 KV cache (measure_fp8_kernels.py; rows with
  kv_dtype=fp8 of one `--fp8-kernel`); fits `attention_{prefill,decode}_fp8kv`.

An existing output file's `engine` section (engine CPU-time coefficients, fitted elsewhere) is
kept. Its `validation` section is dropped: it belonged to the old fit; re-record it with
analysis/validate_step_model.py --record.

Each measured shape is rebuilt with our own operator accounting (sim.calibrate.work), so a
fitted curve means exactly what the cost model uses it for.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from sim.calibrate.fit import (
    AttentionSample,
    ElementwiseSample,
    FitError,
    GemmSample,
    fit_allreduce,
    fit_attention_decode,
    fit_attention_prefill,
    fit_elementwise,
    fit_gemm,
    fit_ring_extrapolation,
)
from sim.calibrate.comm_fit import fit_alltoall, fit_p2p, measured_on
from sim.calibrate.work import step_work
from sim.catalog import hardware_spec_from_config, load_catalog_entry, model_spec_from_config
from sim.cost.efficiency import tensor_peak_flops
from sim.cost.operators import dense_gemm
from sim.errors import SimError
from sim.precision import PrecisionSpec
from sim.step import StepShape

FP8_KV = PrecisionSpec("bf16_kv8", "bf16", "bf16", "fp8")

GEMM_OPS = {  # op name in the ops CSV -> (class in our accounting, kernel index)
    "qkv_proj": ("qkv_proj", 0),
    "o_proj": ("o_proj", 0),
    "gate_up_proj": ("mlp", 0),
    "down_proj": ("mlp", 1),
    "lm_head": ("lm_head", 0),
}
ELEMENTWISE_OPS = ("add_rmsnorm", "rope", "silu_mul", "embed")


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _chosen(rows: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    return [r for r in rows if r.get("chosen", "True") == "True"]


def _step_key(r: dict[str, str]) -> tuple[str, str, int, int, int]:
    return (r["model"], r["phase"], int(r["batch"]), int(r["ctx"]), int(r.get("tp") or 1))


def fit_profile(
    hardware_name: str,
    ops_rows: list[dict[str, str]],
    gemm_rows: list[dict[str, str]],
    allreduce_rows: list[dict[str, str]],
    sources: list[str],
    fp8_attention_rows: list[dict[str, str]] = (),
    fp8_kernel: str = "triton_paged",
) -> dict[str, Any]:
    hardware = hardware_spec_from_config(load_catalog_entry("hardware", hardware_name))
    bw = hardware.memory_bandwidth
    models = {}
    works = {}
    rows = _chosen(ops_rows)
    for r in rows:
        key = _step_key(r)
        if key not in works:
            name = key[0]
            if name not in models:
                models[name] = model_spec_from_config(load_catalog_entry("model", name))
            works[key] = step_work(models[name], hardware, StepShape(key[1], key[2], key[3]), key[4])

    gemm_samples: dict[str, list[GemmSample]] = defaultdict(list)
    prefill, decode, elementwise = [], [], []
    ew_seconds: dict[tuple, float] = defaultdict(float)
    for r in rows:
        work = works[_step_key(r)]
        op = r["op"]
        if op in GEMM_OPS:
            cls, index = GEMM_OPS[op]
            gemm = work.gemms[cls][index]
            gemm_samples[gemm.dtype].append(GemmSample((gemm,), 1, float(r["ms_per_call"]) * 1e-3, eager=False))
        elif r["op_class"] == "attention_prefill" and work.prefill is not None:
            prefill.append(AttentionSample(work.prefill, 1, float(r["ms_per_call"]) * 1e-3, work.kv_heads))
        elif r["op_class"] == "attention_decode" and work.decode is not None:
            decode.append(AttentionSample(work.decode, 1, float(r["ms_per_call"]) * 1e-3, work.kv_heads))
        elif op in ELEMENTWISE_OPS:
            ew_seconds[_step_key(r)] += float(r["ms_per_step"]) * 1e-3
    for key, seconds in ew_seconds.items():
        w = works[key]
        elementwise.append(ElementwiseSample(w.elementwise_layer, w.elementwise_step, w.layers, seconds))

    for r in gemm_rows:
        dtype = r["dtype"]
        m, k, n = int(r["M"]), int(r["K"]), int(r["N"])
        if r.get("m_run"):
            m_run = int(r["m_run"])
        else:
            m_run = max(m, 16) if dtype == "fp8" else m  # the old sweep padded fp8 rows below 16
        g = dense_gemm(m_run, n, k, dtype, 1.0 if dtype == "fp8" else 2.0, 2.0)
        eager = r.get("mode", "eager") != "graph"
        gemm_samples[dtype].append(GemmSample((g,), 1, float(r["ms"]) * 1e-3, eager=eager))

    profile: dict[str, Any] = {
        "hardware": hardware.name,
        "generation": hardware.generation,
        "interconnect": hardware.interconnect,
        "boost_clock_mhz": hardware.boost_clock_mhz,
        "measured_on": _machine(ops_rows or gemm_rows),
        "sources": sources,
        "gemm": {},
        "fit_errors": {},
    }
    graph_fixed = None
    for dtype in sorted(gemm_samples, key=lambda d: d != "bf16"):  # bf16 first
        curve, error, eager_fixed = fit_gemm(gemm_samples[dtype], tensor_peak_flops(hardware.peak_flops, dtype), bw)
        has_graph = any(not s.eager for s in gemm_samples[dtype])
        fixed = curve.fixed_s if has_graph else graph_fixed
        if dtype == "bf16":
            graph_fixed = curve.fixed_s
        profile["gemm"][dtype] = {
            "fixed_s": fixed if fixed is not None else curve.fixed_s,
            "compute_efficiency": curve.compute_efficiency,
            "memory_efficiency": curve.memory_efficiency,
            "tile_m": curve.tile_m,
            "ridge_p": curve.ridge_p,
        }
        profile["fit_errors"][f"gemm_{dtype}"] = {**error.as_dict(), "eager_launch_fixed_s": eager_fixed}
    bf16_peak = tensor_peak_flops(hardware.peak_flops, "bf16")
    if prefill:
        curve, error = fit_attention_prefill(prefill, bf16_peak, bw)
        profile["attention_prefill"] = _curve_dict(curve)
        profile["fit_errors"]["attention_prefill"] = error.as_dict()
    if decode:
        curve, error = fit_attention_decode(decode, bf16_peak, bw)
        profile["attention_decode"] = _curve_dict(curve)
        profile["fit_errors"]["attention_decode"] = error.as_dict()
    if elementwise:
        fixed, eff, error = fit_elementwise(elementwise, bw)
        profile["elementwise"] = {"fixed_s": fixed, "memory_efficiency": eff}
        profile["fit_errors"]["elementwise"] = error.as_dict()
    profile["allreduce"], profile["allreduce_measured_on"] = _fit_allreduce(allreduce_rows)
    if profile["allreduce"]:
        for tp, fit in profile["allreduce"].items():
            profile["fit_errors"][f"allreduce_tp{tp}"] = fit.pop("error")
    if len(profile["allreduce"]) >= 2:
        curves = {int(tp): (f["measured_bytes"], f["measured_s"]) for tp, f in profile["allreduce"].items()}
        ring, checks = fit_ring_extrapolation(curves)
        profile["allreduce_extrapolation"] = {
            "hop_latency_s": ring.hop_latency_s,
            "ring_bandwidth": ring.ring_bandwidth,
            "model": "t_n(S) = t_a(S) + 2(n-a) hop_latency_s + (2(n-1)/n - 2(a-1)/a) S / ring_bandwidth,"
            " a = the largest measured TP size below n (NCCL ring)",
        }
        profile["fit_errors"]["allreduce_extrapolation"] = checks
    fp8 = [r for r in fp8_attention_rows if r.get("kv_dtype") == "fp8" and r.get("kernel") == fp8_kernel]
    if fp8:
        _fit_fp8kv(profile, fp8, hardware, models)
    return profile


def _fit_fp8kv(profile: dict[str, Any], rows: list[dict[str, str]], hardware, models: dict) -> None:
    """FP8-KV attention curves from kernel timings, at the bf16 peak (the kernel dequantises
    and runs 16-bit products). `deployment` names the model and TP size of each head count."""
    prefill, decode = [], []
    for r in rows:
        name, tp = r["deployment"].split()
        if name not in models:
            models[name] = model_spec_from_config(load_catalog_entry("model", name))
        phase, batch, ctx = r["phase"], int(r["batch"]), int(r["ctx"])
        work = step_work(models[name], hardware, StepShape(phase, batch, ctx), int(tp[2:]), FP8_KV)
        sample = AttentionSample(work.prefill or work.decode, 1, float(r["ms"]) * 1e-3, work.kv_heads)
        (prefill if phase == "prefill" else decode).append(sample)
    peak = tensor_peak_flops(hardware.peak_flops, "bf16")
    bw = hardware.memory_bandwidth
    for key, samples, fit in (
        ("attention_prefill_fp8kv", prefill, lambda s: fit_attention_prefill(s, peak, bw, (64.0, 512.0, 4096.0))),
        ("attention_decode_fp8kv", decode, lambda s: fit_attention_decode(s, peak, bw)),
    ):
        if samples:
            curve, error = fit(samples)
            profile[key] = _curve_dict(curve)
            profile["fit_errors"][key] = error.as_dict()
    r = rows[0]
    profile["fp8kv_measured_on"] = f"{r.get('gpu', '?')}, {r.get('kernel', '?')}, torch {r.get('torch', '?')}"


def _fit_allreduce(rows: list[dict[str, str]]) -> tuple[dict[str, dict], str]:
    by_tp: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        if r.get("mode", "graph") != "graph":
            continue  # eager launches include the CPU's launch cost; engines capture graphs
        by_tp[int(r["tp"])].append((float(r["bytes"]), float(r["ms"]) * 1e-3))
    fits = {}
    for tp, points in sorted(by_tp.items()):
        points.sort()
        fit, error = fit_allreduce(tp, [b for b, _ in points], [t for _, t in points])
        fits[str(tp)] = {
            "latency_s": fit.latency_s,
            "bus_bandwidth": fit.bus_bandwidth,
            "measured_bytes": [b for b, _ in points],
            "measured_s": [t for _, t in points],
            "error": error.as_dict(),
        }
    if not rows:
        return fits, ""
    r = rows[0]
    return fits, f"{r.get('gpus', '?')}x {r.get('gpu', '?')}, NCCL {r.get('nccl', '?')}, CUDA graphs"


def _curve_dict(curve) -> dict[str, float]:
    return {
        "fixed_s": curve.fixed_s,
        "compute_efficiency": curve.compute_efficiency,
        "memory_efficiency": curve.memory_efficiency,
        "half": curve.half,
        "ridge_p": curve.ridge_p,
    }


def _machine(rows: list[dict[str, str]]) -> str:
    if not rows:
        return ""
    r = rows[0]
    clocks = sorted({int(float(x["sm_clock_mhz"])) for x in rows if x.get("sm_clock_mhz")})
    clock = f", SM clock {clocks[0]}-{clocks[-1]} MHz as measured" if clocks else ""
    return f"{r.get('gpu', '?')}, torch {r.get('torch', '?')}{clock}"


def add_comm_sections(profile: dict[str, Any], alltoall_rows: list[dict[str, str]], p2p_rows: list[dict[str, str]]) -> None:
    """The all-to-all and send/recv fits, where measured."""
    for name, rows, fit in (("alltoall", alltoall_rows, fit_alltoall), ("p2p", p2p_rows, fit_p2p)):
        if rows:
            profile[name], errors = fit(rows)
            profile[f"{name}_measured_on"] = measured_on(rows)
            profile["fit_errors"].update(errors)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hardware", required=True, help="catalog name, e.g. h100_sxm")
    p.add_argument("--ops", type=Path, action="append", default=[])
    p.add_argument("--gemm-sweep", type=Path, action="append", default=[])
    p.add_argument("--allreduce", type=Path, action="append", default=[])
    p.add_argument("--fp8-attention", type=Path, action="append", default=[])
    p.add_argument("--alltoall", type=Path, action="append", default=[])
    p.add_argument("--p2p", type=Path, action="append", default=[])
    p.add_argument("--fp8-kernel", default="triton_paged", help="kernel column of the FP8-KV rows to fit")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    try:
        ops = [r for path in args.ops for r in read_csv(path)]
        gemm = [r for path in args.gemm_sweep for r in read_csv(path)]
        allreduce = [r for path in args.allreduce for r in read_csv(path)]
        fp8_attention = [r for path in args.fp8_attention for r in read_csv(path)]
        sources = [str(x) for x in (*args.ops, *args.gemm_sweep, *args.allreduce, *args.fp8_attention)]
        profile = fit_profile(args.hardware, ops, gemm, allreduce, sources, fp8_attention, args.fp8_kernel)
        add_comm_sections(profile, [r for path in args.alltoall for r in read_csv(path)],
                          [r for path in args.p2p for r in read_csv(path)])
        profile["sources"] += [str(x) for x in (*args.alltoall, *args.p2p)]
        if args.out.is_file():  # engine CPU-time coefficients are fitted elsewhere: keep them
            old = json.loads(args.out.read_text())
            if "engine" in old:
                profile["engine"] = old["engine"]
    except (SimError, OSError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(profile, indent=2) + "\n")
    print(json.dumps(profile["fit_errors"], indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
