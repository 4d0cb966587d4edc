"""The fused-MoE and MLA-decode curves: each term priced by hand, the block padding against
enumeration, vLLM's block choice, the fit on the committed H200 CSVs, and where a run's curves
come from (measured, transferred, none)."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from sim.calibrate import moe_mla_fit
from sim.catalog import hardware_spec_from_config, load_catalog_entry, model_spec_from_config
from sim.config.schema import CostConfig
from sim.cost.batch import BatchSummary
from sim.cost.cost_spec import CostSpec
from sim.cost.fused_moe_configs import fused_moe_blocks
from sim.cost.mla import NUM_KV_SPLITS, MlaDecodeCurve, absorb_gemms
from sim.cost.moe import GroupedGemm, GroupedGemmCurve, MoeShapes, expected_blocks, fused_moe_launches
from sim.cost.moe_mla_fits import FALLBACK_MLA, FALLBACK_MOE, moe_mla_kernels
from sim.cost.operators import Gemm, TensorFormats
from sim.cost.profiles import PROFILE_DIR, build_efficiency
from sim.cost.staged import StagedCostModel
from sim.parallel import ParallelSpec
from sim.precision import PrecisionSpec

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "calibration" / "data"
BF16 = PrecisionSpec("bf16", "bf16", "bf16", "bf16")


def hardware(name="h200"):
    return hardware_spec_from_config(load_catalog_entry("hardware", name))


def cost_spec(**kw) -> CostSpec:
    return CostSpec(**{**vars(CostConfig()), **kw})


# ---- each term by hand -------------------------------------------------------------------


def test_grouped_gemm_terms_by_hand():
    # 2 experts hit, 20 rows padded to 2 x 16 = 32; a 16 x 32 x 64 tile: 32 / 16 x 256 / 32 = 16
    # programs, each asking 32 x 64 x 2 bytes per K step
    g = Gemm(10, 256, 512, "bf16", flops=2.0 * 20 * 256 * 512, bytes=2 * 256 * 512 * 2 + 20 * 512 * 2 + 20 * 256 * 2)
    launch = GroupedGemm.of(g, 32.0, (16, 32, 64), 2.0)
    assert launch.inflight_bytes == 16 * 32 * 64 * 2
    assert launch.tile_intensity == pytest.approx(16 * 32 / 48)
    c = GroupedGemmCurve(fixed_s=2e-6, compute_efficiency=0.5, memory_efficiency=0.8,
                         inflight_half_bytes=65536.0, ridge_p=2.0, tile_half=10.0)  # fmt: skip
    peak, bw = 1e15, 4e12
    i = 16 * 32 / 48
    compute = 2.0 * 32 * 256 * 512 / (peak * 0.5 * i / (i + 10.0))  # padded rows, small tile
    memory = g.bytes / (bw * 0.8 * 65536 / (65536 + 65536))  # half the in-flight half point
    k = c.time(launch, peak, bw)
    assert k.compute_s == pytest.approx(compute)
    assert k.memory_s == pytest.approx(memory)
    assert k.time_s == pytest.approx(2e-6 + math.hypot(compute, memory))  # p = 2


def test_mla_decode_terms_by_hand():
    c = MlaDecodeCurve(fixed_s=5e-6, compute_efficiency=0.1, memory_efficiency=0.9, stream_half=100.0, ridge_p=1.0)
    flops, nbytes, seqs, peak, bw = 1e9, 50e6, 25, 1e15, 5e12
    u = seqs * NUM_KV_SPLITS  # 100 streams: half the bandwidth
    k = c.time(flops, nbytes, seqs, peak, bw)
    assert u == 100
    assert k.memory_s == pytest.approx(nbytes / (bw * 0.9 * 0.5))
    assert k.compute_s == pytest.approx(flops / (peak * 0.1))
    assert k.time_s == pytest.approx(5e-6 + k.memory_s + k.compute_s)  # p = 1: the sum


@pytest.mark.parametrize("trials,mean,block", [(3, 1.2, 2), (8, 0.25, 16), (40, 10.0, 4), (200, 24.0, 16)])
def test_expected_blocks_is_the_mean_of_ceil_over_the_binomial(trials, mean, block):
    p = mean / trials
    exact = sum(math.comb(trials, x) * p**x * (1 - p) ** (trials - x) * -(-x // block) for x in range(trials + 1))
    assert expected_blocks(mean, trials, block) == pytest.approx(exact, rel=1e-9)


def test_expected_blocks_normal_branch_is_close_to_exact():
    trials, mean, block = 2048, 64.0, 64  # DeepSeek-V3 at EP8, 2048 tokens: measured 1.46
    p = mean / trials
    log_pmf = [math.lgamma(trials + 1) - math.lgamma(x + 1) - math.lgamma(trials - x + 1)
               + x * math.log(p) + (trials - x) * math.log1p(-p) for x in range(400)]  # fmt: skip
    exact = sum(math.exp(lp) * -(-x // block) for x, lp in enumerate(log_pmf))
    assert expected_blocks(mean, trials, block) == pytest.approx(exact, rel=0.01)


def test_vllm_block_choice_tuned_table_nearest_m_else_defaults():
    assert fused_moe_blocks("h200", 1000, 128, 768, "bf16") == (128, 256, 64)  # table, M=1024
    assert fused_moe_blocks("h200", 3, 32, 2048, "fp8") == (16, 128, 128)
    assert fused_moe_blocks("h100_sxm", 3, 128, 768, "bf16") == (16, 32, 64)  # M <= E default
    assert fused_moe_blocks("h200", 33, 32, 2048, "bf16") == (64, 64, 32)  # M > E default
    assert fused_moe_blocks("h200", 3, 16, 1536, "fp8") == (64, 128, 128)  # block-fp8 default
    assert fused_moe_blocks("h200", 600, 256, 256, "fp8") == (16, 128, 128)  # DeepSeek TP8 table


def test_launches_pad_each_experts_rows_to_the_block():
    s = MoeShapes(hidden=512, num_experts=4, top_k=2, expert_width=256, local_experts=4, ep=1, imbalance=1.0, shared_width=0)
    f = TensorFormats.resolve(BF16, hardware())
    w13, w2 = fused_moe_launches(s, f, 3, 3, "none")  # 3 tokens <= 4 experts: 16 x 32 x 64
    # each expert gets X ~ Binomial(3, 1/2) rows; one block when X > 0
    assert w13.padded_rows == pytest.approx(4 * 16 * (1 - 0.5**3))
    assert w13.inflight_bytes == pytest.approx(w13.padded_rows / 16 * (512 // 32) * 32 * 64 * 2)
    assert w2.inflight_bytes == pytest.approx(w2.padded_rows / 16 * (512 // 32) * 32 * 64 * 2)
    assert w13.gemm.n == 512 and w2.gemm.n == 512


# ---- the fit on the committed CSVs -----------------------------------------------------


def test_fit_on_the_committed_h200_csvs_reproduces_the_profile():
    sections = moe_mla_fit.fit_sections(hardware(), DATA / "h200_fused_moe.csv", DATA / "h200_mla_triton.csv")
    profile = json.loads((PROFILE_DIR / "h200.json").read_text())
    for dtype in ("bf16", "fp8"):
        for key, value in sections["grouped_gemm"][dtype].items():
            assert profile["grouped_gemm"][dtype][key] == pytest.approx(value, rel=1e-3), (dtype, key)
        err = sections["fit_errors"][f"grouped_gemm_{dtype}"]
        assert err["n"] == (56 if dtype == "bf16" else 28)
        assert err["median"] < 0.08 and err == pytest.approx(profile["fit_errors"][f"grouped_gemm_{dtype}"], rel=1e-3)
    for key, value in sections["attention_decode_mla"].items():
        assert profile["attention_decode_mla"][key] == pytest.approx(value, rel=1e-3), key
    assert sections["fit_errors"]["attention_decode_mla"]["median"] < 0.08


def test_fit_recovers_a_known_curve():
    rows = list(csv.DictReader((DATA / "h200_fused_moe.csv").open()))
    samples = [s for s in moe_mla_fit.moe_samples(rows) if s.dtype == "fp8"]
    truth = GroupedGemmCurve(4e-6, 0.6, 0.85, 8e5, 6.0, 40.0)
    h = hardware()
    peak, bw = h.peak_flops["fp8"], h.memory_bandwidth
    synthetic = [moe_mla_fit.MoeSample(s.name, s.dtype, s.launch, truth.time(s.launch, peak, bw).time_s) for s in samples]
    curve, error, predicted = moe_mla_fit.fit_grouped_gemm(synthetic, peak, bw)
    assert error.max < 0.01
    assert np.allclose(predicted, [s.seconds for s in synthetic], rtol=0.01)


def test_fit_cli_refuses_a_missing_csv(tmp_path, capsys):
    code = moe_mla_fit.main(["--moe", str(tmp_path / "none.csv")])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: no measurement file")


# ---- where a run's curves come from ------------------------------------------------------


def kernels_for(name: str, directory: Path = PROFILE_DIR, **cost):
    hw = hardware(name)
    return moe_mla_kernels(build_efficiency(hw, cost_spec(**cost), 16, 1, directory), hw, directory)


def test_h200_is_measured_h100_transferred_flat_has_none():
    own = kernels_for("h200")
    assert own.provenance["grouped_gemm"].startswith("measured") and set(own.grouped_gemm) == {"bf16", "fp8"}
    other = kernels_for("h100_sxm")
    assert other.provenance["grouped_gemm"].startswith("transferred from h200 (same generation)")
    assert other.provenance["attention_decode_mla"].startswith("transferred from h200")
    across = kernels_for("a100_80gb")
    assert "another generation" in across.provenance["attention_decode_mla"]
    ratio = 1980.0 / hardware("a100_80gb").boost_clock_mhz  # fixed costs are H200 clock cycles
    assert across.mla_decode.fixed_s == pytest.approx(own.mla_decode.fixed_s * ratio)
    flat = kernels_for("h200", efficiency="flat")
    assert flat.provenance == {"grouped_gemm": FALLBACK_MOE, "attention_decode_mla": FALLBACK_MLA}
    assert flat.mla_decode is None and not flat.grouped_gemm


def test_profiles_without_the_fits_fall_back_to_dense_pricing(tmp_path):
    shutil.copy(PROFILE_DIR / "h100_sxm.json", tmp_path / "h100_sxm.json")
    k = kernels_for("h100_sxm", tmp_path)
    assert k.provenance["grouped_gemm"] == FALLBACK_MOE and k.mla_decode is None


def test_staged_model_prices_routed_experts_on_the_fused_moe_curve():
    model = model_spec_from_config(load_catalog_entry("model", "deepseek_v3"))
    h = hardware()
    fp8 = PrecisionSpec("fp8", "fp8", "fp8", "bf16")
    layout = ParallelSpec(tp=1, dp=8, ep=8)
    eff = build_efficiency(h, cost_spec(), 128, 1)
    cm = StagedCostModel(model, h, fp8, layout, eff, 0.0, mla_backend="triton_mla")
    launches = fused_moe_launches(cm.moe, cm.formats, 256, 32, "h200")
    expected = sum(cm.moe_mla.grouped_gemm_time(x).time_s for x in launches)
    assert cm._routed_experts(256, 32).time_s == pytest.approx(expected)
    # MLA decode of the rank's 4 sequences on the fitted TRITON_MLA curve
    batch = BatchSummary(num_decode_seqs=32, decode_context_tokens=32 * 1000)
    flops, nbytes = cm.mla_attention.decode(4, 4000)
    mla = cm.moe_mla.mla_decode_time(flops, nbytes, 4).time_s
    absorb = cm._price_gemms(absorb_gemms(cm.mla, 4)).time_s
    assert cm._attention_decode(batch).time_s == pytest.approx(mla + absorb)
    assert "grouped_gemm" in cm.provenance() and cm.provenance()["grouped_gemm"].startswith("measured")
