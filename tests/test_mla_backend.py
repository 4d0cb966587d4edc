"""The MLA attention backend as vLLM 0.24.0 picks it (vllm/platforms/cuda.py), which backend is
priced on the measured TRITON_MLA curve, and what the run says is measured or assumed."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import compose_config

from sim.catalog import hardware_spec_from_config, load_catalog_entry, model_spec_from_config
from sim.config.schema import CostConfig
from sim.cost.batch import BatchSummary
from sim.cost.cost_spec import CostSpec
from sim.cost.mla import absorb_gemms
from sim.config.build import build_run_spec
from sim.cost.mla_backend import ASSUMED_MLA, MLA_BACKENDS, kv_block_size, resolve_mla_backend
from sim.cost.profiles import build_efficiency
from sim.cost.roofline import build_cost_model
from sim.cost.staged import StagedCostModel
from sim.errors import ConfigError
from sim.metrics.report import format_summary
from sim.parallel import ParallelSpec
from sim.precision import PrecisionSpec

FP8 = PrecisionSpec("fp8", "fp8", "fp8", "bf16")  # W8A8, bf16 latent cache (kv_cache_dtype auto)


def hardware(name: str):
    return hardware_spec_from_config(load_catalog_entry("hardware", name))


def deepseek():
    return model_spec_from_config(load_catalog_entry("model", "deepseek_v3"))


@pytest.mark.parametrize(
    "gpu, kv, nope, expected",
    [
        ("h200", "bf16", 128, "flash_attn_mla"),  # 9.x: first of FLASH_ATTN_MLA, FLASHMLA, ...
        ("h100_sxm", "bf16", 128, "flash_attn_mla"),
        ("h100_pcie", "bf16", 128, "flash_attn_mla"),
        ("h200", "fp8", 128, "flashmla"),  # FLASH_ATTN_MLA takes no fp8 cache
        ("b200", "bf16", 128, "flashinfer_mla"),  # 10.x: forced for qk_nope_head_dim 128
        ("b200", "fp8", 128, "flashinfer_mla"),
        ("b200", "bf16", 64, "cutlass_mla"),  # 10.x otherwise
        ("a100_80gb", "bf16", 128, "triton_mla"),  # 8.x: nothing before TRITON_MLA validates
        ("l40s", "bf16", 128, "triton_mla"),
        ("mi300x", "bf16", 128, "triton_mla"),  # ROCm without VLLM_ROCM_USE_AITER
    ],
)
def test_auto_resolves_as_vllms_priority_list(gpu, kv, nope, expected):
    backend = resolve_mla_backend("auto", hardware(gpu), kv, nope)
    assert backend.name == expected and backend.why.startswith("auto")
    assert backend.measured == (expected == "triton_mla")


def test_a_set_backend_is_kept_and_one_vllm_refuses_is_refused():
    h200, b200 = hardware("h200"), hardware("b200")
    assert resolve_mla_backend("triton_mla", h200, "bf16", 128).name == "triton_mla"
    assert resolve_mla_backend("flashmla", b200, "bf16", 128).name == "flashmla"
    with pytest.raises(ConfigError, match="FLASH_ATTN_MLA needs compute capability 9.x"):
        resolve_mla_backend("flash_attn_mla", b200, "bf16", 128)
    with pytest.raises(ConfigError, match="CUTLASS_MLA needs compute capability 10.x"):
        resolve_mla_backend("cutlass_mla", h200, "bf16", 128)
    with pytest.raises(ConfigError, match="bf16/fp16 KV cache only"):
        resolve_mla_backend("flash_attn_mla", h200, "fp8", 128)
    with pytest.raises(ConfigError, match="one of " + ", ".join(MLA_BACKENDS)):
        resolve_mla_backend("flash_mla", h200, "bf16", 128)


def staged(backend: str, gpu: str = "h200") -> StagedCostModel:
    h = hardware(gpu)
    eff = build_efficiency(h, CostSpec(**vars(CostConfig())), 128, 1)
    return StagedCostModel(deepseek(), h, FP8, ParallelSpec(tp=1, dp=8, ep=8), eff, 0.0, mla_backend=backend)


def test_triton_mla_is_priced_on_the_triton_curve_and_the_default_is_not():
    batch = BatchSummary(num_decode_seqs=256, decode_context_tokens=256 * 2000)  # 32 per DP rank
    triton, default = staged("triton_mla"), staged("auto")
    assert default.mla_backend.name == "flash_attn_mla"
    flops, nbytes = triton.mla_attention.decode(32, 32 * 2000)
    absorb = triton._price_gemms(absorb_gemms(triton.mla, 32)).time_s
    on_curve = triton.moe_mla.mla_decode_time(flops, nbytes, 32).time_s
    fa = default.efficiency.attention_decode(flops, nbytes, 32, 32 * 2000, "bf16").time_s
    assert triton._attention_decode(batch).time_s == pytest.approx(on_curve + absorb)
    assert default._attention_decode(batch).time_s == pytest.approx(fa + absorb)
    # 128 heads per GPU: the Triton kernel is compute-bound, the assumed FlashAttention pricing
    # is below it and stands
    assert fa < on_curve


def test_an_assumed_backend_is_capped_at_the_measured_triton_kernel():
    # TP8 (16 heads) at 256 tokens of context: the FlashAttention curve alone prices above the
    # measured Triton kernel, which bounds a backend vLLM ranks before it
    h = hardware("h200")
    eff = build_efficiency(h, CostSpec(), 16, 1)
    cm = StagedCostModel(deepseek(), h, FP8, ParallelSpec(tp=8), eff, 0.0)
    batch = BatchSummary(num_decode_seqs=4, decode_context_tokens=4 * 256)
    flops, nbytes = cm.mla_attention.decode(4, 4 * 256)
    fa = eff.attention_decode(flops, nbytes, 4, 4 * 256, "bf16").time_s
    triton = cm.moe_mla.mla_decode_time(flops, nbytes, 4).time_s
    absorb = cm._price_gemms(absorb_gemms(cm.mla, 4)).time_s
    assert triton < fa
    assert cm._attention_decode(batch).time_s == pytest.approx(triton + absorb)
    # without a Triton curve (flat factors) nothing caps it, and the summary says so
    flat_eff = build_efficiency(h, CostSpec(efficiency="flat"), 16, 1)
    flat = StagedCostModel(deepseek(), h, FP8, ParallelSpec(tp=8), flat_eff, 0.0)
    assert "capped" not in flat.provenance()["attention_decode_mla"]
    assert "assumed, not measured" in flat.assumptions()["mla_attention"]


def test_provenance_says_measured_for_triton_and_assumed_for_the_others():
    src = staged("triton_mla").provenance()["attention_decode_mla"]
    assert src.startswith("TRITON_MLA (set, hopper") and "): priced on a split-KV Triton kernel of its design: measured" in src
    transferred = staged("triton_mla", "h100_sxm")
    assert "transferred from h200" in transferred.provenance()["attention_decode_mla"]
    assert "transferred from h200" in transferred.assumptions()["mla_attention"]  # not "measured"
    auto = staged("auto")
    src = auto.provenance()["attention_decode_mla"]
    assert src.startswith("FLASH_ATTN_MLA (auto") and f"): {ASSUMED_MLA}" in src
    statement = auto.assumptions()["mla_attention"]
    assert "FLASH_ATTN_MLA" in statement and "assumed, not measured" in statement
    assert "upper bound" in statement and "capped" in statement
    # a model without MLA says nothing about it
    llama = model_spec_from_config(load_catalog_entry("model", "llama3_8b"))
    plain = build_cost_model(llama, hardware("h200"), FP8, 1, CostSpec(), ParallelSpec(tp=1, dp=2))
    assert "mla_attention" not in plain.assumptions() and "attention_decode_mla" not in plain.provenance()


def test_the_printed_summary_names_the_backend(tmp_path):
    line = [x for x in _printed(tmp_path).splitlines() if x.startswith("mla decode")]
    assert len(line) == 1 and "FLASH_ATTN_MLA" in line[0] and "assumed, not measured" in line[0]


def _printed(tmp_path) -> str:
    from sim.config.build import build_run_spec, resolved_config
    from sim.run import simulate

    cfg = compose_config(["model=deepseek_v3", "hardware=h200", "precision=fp8", "parallel=tp8",
                          "workload.num_requests=8", "output.progress=false", "output.write_steps=false",
                          "output.print_summary=false"])  # fmt: skip
    result = simulate(build_run_spec(cfg), tmp_path, resolved_config(cfg))
    return format_summary(result.summary)


def test_an_unknown_backend_name_is_one_error_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sim", "cost.mla_backend=flash_mla", "workload.num_requests=4",
         "output.progress=false", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cost.mla_backend='flash_mla' is not an MLA backend")


@pytest.mark.parametrize(
    "gpu, choice, requested, expected",
    [
        ("h200", "auto", 16, 64),  # FlashMLA runs on Hopper: 64, whatever backend then runs
        ("h100_sxm", "auto", 128, 128),  # already a multiple of 64
        ("h200", "flash_attn_mla", 16, 16),  # a set FLASH_ATTN_MLA forces nothing
        ("h200", "flashmla", 32, 64),
        ("b200", "auto", 16, 64),  # FLASHINFER_MLA for qk_nope_head_dim 128
        ("b200", "auto", 32, 32),  # FLASHINFER_MLA keeps 32
        ("b200", "cutlass_mla", 64, 128),
        ("a100_80gb", "auto", 16, 16),  # TRITON_MLA
        ("mi300x", "auto", 16, 16),  # ROCm: not the CUDA platform's rule
    ],
)
def test_the_kv_block_size_is_the_one_vllm_forces_for_mla(gpu, choice, requested, expected):
    size, why = kv_block_size(requested, hardware(gpu), choice, qk_nope_head_dim=128)
    assert size == expected
    assert (why == "") == (size == requested)
    assert kv_block_size(16, hardware("b200"), "auto", qk_nope_head_dim=64)[0] == 128  # CUTLASS_MLA


def test_an_mla_run_pages_its_cache_in_the_forced_blocks_and_says_so():
    base = ["model=deepseek_v3", "hardware=h200", "precision=fp8", "parallel=tp8"]
    spec = build_run_spec(compose_config(base))
    assert spec.block_size == 64 and spec.memory.block_size == 64
    assert "vLLM forces it on h200" in spec.block_size_source
    dense = build_run_spec(compose_config(["model=llama3_8b", "hardware=h200"]))
    assert dense.block_size == 16 and dense.block_size_source == ""
    kept = build_run_spec(compose_config([*base, "cost.mla_backend=triton_mla"]))
    assert kept.block_size == 16


def test_pools_whose_gpus_force_different_mla_block_sizes_are_refused():
    base = ["model=deepseek_v3", "precision=fp8", "hardware=h200", "parallel=tp8", "deployment=pd_1p3d_h100",
            "deployment.pools.prefill.hardware=h200", "deployment.pools.prefill.tp=8",
            "deployment.pools.decode.hardware=h200", "deployment.pools.decode.tp=8",
            "scheduler.max_model_len=16384"]  # fmt: skip
    assert build_run_spec(compose_config(base)).block_size == 64  # both pools on H200
    with pytest.raises(ConfigError, match=r"deployment.pools.decode \(mi300x\) would page .* 16-token blocks"):
        build_run_spec(compose_config([*base, "deployment.pools.decode.hardware=mi300x"]))
    with pytest.raises(ConfigError, match="not an MLA backend"):  # the name first, before any block size
        build_run_spec(compose_config([*base, "cost.mla_backend=flashmlaa"]))
