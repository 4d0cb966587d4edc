"""The simulator's MoE and MLA-decode kernel prices against what one H200 measured.

    python calibration/check_moe_mla.py [--profile h200]

Reads calibration/data/h200_fused_moe.csv and h200_mla_triton.csv (calibration/
measure_fused_moe_mla.py: Triton kernels of vLLM's fused_moe and TRITON_MLA designs, inside
CUDA graphs) and prices every measured shape twice, as the simulator does from the shape
alone (routing, block padding and block sizes its own, sim.cost.moe / sim.cost.mla):

- `model`: the fitted curves (sim.cost.moe_mla_fits: the H200 profile's `grouped_gemm` and
  `attention_decode_mla`), what runs use now;
- `dense`: the pricing they replace: a grouped GEMM as one dense GEMM of rows / hit rows per
  hit expert on the dense-GEMM curve, MLA decode on the FlashAttention decode curve.

A second MoE table prices shapes the fit never saw (h200_fused_moe_holdout.csv).
Prints one row per measured kernel and the median and worst relative error of each column;
last, batches of mixed context lengths (h200_mla_triton_mixed.csv), not fitted, which the
batch summary's total context prices from the mean sequence.
The fit's own error (with each row's measured routing and block sizes) is in the profile's
`fit_errors`.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

from sim.catalog import hardware_spec_from_config, load_catalog_entry
from sim.config.schema import CostConfig
from sim.cost.cost_spec import CostSpec
from sim.cost.mla import MlaAttentionCoefficients, MlaShapes
from sim.cost.moe import MoeShapes, fused_moe_launches, routed_experts
from sim.cost.moe_mla_fits import moe_mla_kernels
from sim.cost.operators import TensorFormats
from sim.cost.profiles import build_efficiency
from sim.precision import PrecisionSpec

DATA = Path(__file__).parent / "data"
PRECISIONS = {
    "bf16": PrecisionSpec("bf16", "bf16", "bf16", "bf16"),
    "fp8": PrecisionSpec("fp8", "fp8", "fp8", "bf16"),
}


def _cost_spec(profile: str | None) -> CostSpec:
    fields = dict(vars(CostConfig()))
    fields["profile"] = profile
    return CostSpec(**fields)


def moe_rows(hardware, eff, kernels, name: str = "h200_fused_moe.csv") -> list[tuple[str, float, float, float]]:
    out = []
    for r in csv.DictReader((DATA / name).open()):
        local, total, tokens = int(r["local_experts"]), int(r["total_experts"]), int(r["tokens"])
        s = MoeShapes(
            hidden=int(r["hidden"]), num_experts=total, top_k=int(r["top_k"]), expert_width=int(r["width"]),
            local_experts=local, ep=total // local, imbalance=1.0, shared_width=0,
        )  # fmt: skip
        f = TensorFormats.resolve(PRECISIONS[r["dtype"]], hardware)
        launches = fused_moe_launches(s, f, tokens, tokens, hardware.name)
        dense = routed_experts(s, f, tokens, tokens)
        for name, launch, g, ms in zip(("w13", "w2"), launches, dense, (r["ms_w13"], r["ms_w2"])):
            model = kernels.grouped_gemm_time(launch).time_s
            flat = eff.gemm(g.m, g.n, g.k, g.dtype, g.flops, g.bytes).time_s
            out.append((f"{r['shape']} {r['dtype']} {name} T={tokens}", float(ms) * 1e-3, model, flat))
    return out


def _mla_row(hardware, profile, kernels, name: str, measured_ms: str, heads: int, batch: int,
             cached_tokens: int) -> tuple[str, float, float, float]:  # fmt: skip
    """One measured MLA decode against the model and the old pricing; `cached_tokens`: the
    batch's context before the new tokens, as a step's batch summary gives it."""
    formats = TensorFormats.resolve(PRECISIONS["bf16"], hardware)
    eff = build_efficiency(hardware, _cost_spec(profile), heads, 1)
    s = MlaShapes(hidden=7168, heads=heads, kv_lora_rank=512, q_lora_rank=1536, nope=128, rope=64, v_dim=128)
    flops, nbytes = MlaAttentionCoefficients.from_shapes(s, formats).decode(batch, cached_tokens)
    model = kernels.mla_decode_time(flops, nbytes, batch).time_s
    flat = eff.attention_decode(flops, nbytes, batch, cached_tokens, "bf16").time_s
    return name, float(measured_ms) * 1e-3, model, flat


def mla_rows(hardware, profile, kernels) -> list[tuple[str, float, float, float]]:
    out = []
    for r in csv.DictReader((DATA / "h200_mla_triton.csv").open()):
        heads, batch, context = int(r["heads"]), int(r["batch"]), int(r["context"])
        name = f"mla heads={heads} batch={batch} context={context}"
        out.append(_mla_row(hardware, profile, kernels, name, r["ms_attention"], heads, batch, batch * (context - 1)))
    return out


def mla_mixed_rows(hardware, profile, kernels) -> list[tuple[str, float, float, float]]:
    """Batches of mixed context lengths, priced from their total context."""
    out = []
    for r in csv.DictReader((DATA / "h200_mla_triton_mixed.csv").open()):
        heads, batch, total = int(r["heads"]), int(r["batch"]), int(r["total_context"])
        name = f"mla heads={heads} batch={batch} longest={r['max_context']}"
        out.append(_mla_row(hardware, profile, kernels, name, r["ms_attention"], heads, batch, total - batch))
    return out


def report(title: str, rows: list[tuple[str, float, float, float]]) -> None:
    print(f"\n{title}")
    print(f"{'kernel':<44} {'measured ms':>11} {'model ms':>9} {'error':>7} {'dense ms':>9} {'error':>7}")
    model_err, dense_err = [], []
    for name, measured, model, dense in rows:
        e1, e2 = model / measured - 1.0, dense / measured - 1.0
        model_err.append(abs(e1))
        dense_err.append(abs(e2))
        print(f"{name:<44} {measured * 1e3:>11.4f} {model * 1e3:>9.4f} {e1:>+7.0%} {dense * 1e3:>9.4f} {e2:>+7.0%}")
    print(
        f"model: median |error| {statistics.median(model_err):.1%}, worst {max(model_err):.0%};"
        f" dense pricing: median {statistics.median(dense_err):.1%}, worst {max(dense_err):.0%}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default=None, help="a profile name; default: the H200's own")
    args = p.parse_args()
    h200 = hardware_spec_from_config(load_catalog_entry("hardware", "h200"))
    eff = build_efficiency(h200, _cost_spec(args.profile), 16, 1)
    kernels = moe_mla_kernels(eff, h200)
    print(f"cost model: {eff.provenance().get('cost_model')}")
    print(f"grouped GEMM: {kernels.provenance['grouped_gemm']}")
    print(f"MLA decode: {kernels.provenance['attention_decode_mla']}")
    report("fused_moe grouped GEMMs (Triton, vLLM's design; one launch over the local experts)", moe_rows(h200, eff, kernels))
    report(
        "fused_moe on shapes the fit never saw (DeepSeek-V3 TP8, Qwen3-235B-A22B EP8, Mixtral-8x7B TP2)",
        moe_rows(h200, eff, kernels, "h200_fused_moe_holdout.csv"),
    )
    report("MLA decode, absorbed (Triton, vLLM's TRITON_MLA design; paged latent cache)", mla_rows(h200, args.profile, kernels))
    report(
        "MLA decode, mixed context lengths in [64, 4096] (not fitted: priced from the total context)",
        mla_mixed_rows(h200, args.profile, kernels),
    )


if __name__ == "__main__":
    main()
