"""The simulator's MoE and MLA kernel prices against what one H200 measured.

    python calibration/check_moe_mla.py [--profile h200]

Reads calibration/data/h200_moe.csv and h200_mla.csv (calibration/measure_moe_mla.py) and
prices the same shapes with the GPU's calibrated kernel model (sim.cost.calibrated, the H200
profile): the grouped expert GEMMs as sim.cost.moe builds them (one GEMM per expert hit,
rows / hit rows each), MLA decode as sim.cost.mla does (the absorbed attention on the
decode-attention curve with one latent KV head, plus the two absorb GEMMs). Prints one row
per measured shape and the median and worst relative error.

The MLA measurement is a PyTorch implementation (bmm, fp32 softmax, bmm over a contiguous
cache), not FlashMLA: a slower kernel than vLLM's, so the model is expected below it.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

from sim.catalog import hardware_spec_from_config, load_catalog_entry
from sim.config.schema import CostConfig
from sim.cost.cost_spec import CostSpec
from sim.cost.operators import ACT_BYTES, Gemm
from sim.cost.profiles import build_efficiency

DATA = Path(__file__).parent / "data"


def _cost_spec(profile: str | None) -> CostSpec:
    fields = {k: v for k, v in vars(CostConfig()).items()}
    fields["profile"] = profile
    return CostSpec(**fields)


def moe_rows(eff) -> list[tuple[str, float, float]]:
    out = []
    for r in csv.DictReader((DATA / "h200_moe.csv").open()):
        if r["dtype"] != "bf16":
            continue
        hit, rows, h, i = int(r["local_experts_hit"]), int(r["rows_per_expert"]), int(r["hidden"]), int(r["width"])
        total = hit * rows
        w13 = Gemm(rows, 2 * i, h, "bf16", 2.0 * total * 2 * i * h, hit * 2 * i * h * 2 + total * h * 2 + total * 2 * i * ACT_BYTES)
        w2 = Gemm(rows, h, i, "bf16", 2.0 * total * h * i, hit * h * i * 2 + total * i * 2 + total * h * ACT_BYTES)
        for name, g, ms in (("w13", w13, r["ms_w13"]), ("w2", w2, r["ms_w2"])):
            t = eff.gemm(g.m, g.n, g.k, g.dtype, g.flops, g.bytes).time_s
            out.append((f"{r['shape']} {name} T={r['tokens']} hit={hit} rows={rows}", float(ms) * 1e-3, t))
    return out


def mla_rows(hardware, profile) -> list[tuple[str, float, float]]:
    from sim.cost.mla import MlaAttentionCoefficients, MlaShapes, absorb_gemms
    from sim.cost.operators import TensorFormats
    from sim.precision import PrecisionSpec

    out = []
    formats = TensorFormats.resolve(PrecisionSpec("bf16", "bf16", "bf16", "bf16"), hardware)
    for r in csv.DictReader((DATA / "h200_mla.csv").open()):
        heads, batch, context = int(r["heads"]), int(r["batch"]), int(r["context"])
        eff = build_efficiency(hardware, _cost_spec(profile), heads, 1)
        s = MlaShapes(hidden=7168, heads=heads, kv_lora_rank=512, q_lora_rank=1536, nope=128, rope=64, v_dim=128)
        flops, nbytes = MlaAttentionCoefficients.from_shapes(s, formats).decode(batch, batch * (context - 1))
        attention = eff.attention_decode(flops, nbytes, batch, batch * (context - 1), "bf16").time_s
        uk, uv = absorb_gemms(s, batch)
        absorb = sum(eff.gemm(g.m, g.n, g.k, g.dtype, g.flops, g.bytes).time_s for g in (uk, uv))
        measured = (float(r["ms_attention"]) + float(r["ms_absorb_q"]) + float(r["ms_absorb_o"])) * 1e-3
        out.append((f"mla heads={heads} batch={batch} context={context}", measured, attention + absorb))
    return out


def report(title: str, rows: list[tuple[str, float, float]]) -> None:
    print(f"\n{title}")
    print(f"{'shape':<52} {'measured ms':>11} {'model ms':>9} {'error':>7}")
    errors = []
    for name, measured, model in rows:
        err = model / measured - 1.0
        errors.append(abs(err))
        print(f"{name:<52} {measured * 1e3:>11.3f} {model * 1e3:>9.3f} {err:>+7.0%}")
    print(f"median |error| {statistics.median(errors):.0%}, worst {max(errors):.0%}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default=None, help="a profile name; default: the H200's own")
    args = p.parse_args()
    h200 = hardware_spec_from_config(load_catalog_entry("hardware", "h200"))
    eff = build_efficiency(h200, _cost_spec(args.profile), 16, 1)
    print(f"cost model: {eff.provenance().get('cost_model')}")
    report("grouped expert GEMMs (bf16 bmm over the hit experts)", moe_rows(eff))
    report("MLA decode, absorbed (PyTorch, not FlashMLA)", mla_rows(h200, args.profile))


if __name__ == "__main__":
    main()
