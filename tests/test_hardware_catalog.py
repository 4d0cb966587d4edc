"""Hardware and precision catalogs: every YAML loads, peaks are dense and consistent, units are
converted once at the boundary, and a GEMM dtype the chip lacks is refused."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from sim.catalog import (
    CONFIGS_DIR,
    hardware_spec_from_config,
    list_catalog,
    load_catalog_entry,
    model_spec_from_config,
    precision_spec_from_config,
)
from sim.errors import ConfigError
from sim.memory import kv_memory_statement, plan_memory
from sim.hardware_spec import HardwareSpec
from sim.precision import REFERENCE_PRECISIONS, PrecisionSpec

HARDWARE = ("a100_80gb", "h100_sxm", "h100_pcie", "h200", "b200", "l40s", "mi300x")
PRECISIONS = ("bf16", "fp8", "fp8_kv", "bf16_kv8", "int8", "int4", "fp4")

# Dense bf16 tensor TFLOP/s: half of each datasheet's 2:4-sparse figure (A100 624, H100 SXM
# 1,979, H100 PCIe 1,513, B200 4,500, L40S 733); MI300X's datasheet gives the dense 1,307.4.
DENSE_BF16_TFLOPS = {
    "a100_80gb": 312.0,
    "h100_sxm": 989.4,
    "h100_pcie": 756.5,
    "h200": 989.4,
    "b200": 2250.0,
    "l40s": 362.05,
    "mi300x": 1307.4,
}


def hardware(name: str) -> HardwareSpec:
    return hardware_spec_from_config(load_catalog_entry("hardware", name))


def precision(name: str, on: str = "b200") -> PrecisionSpec:
    return precision_spec_from_config(load_catalog_entry("precision", name), hardware(on))


def test_the_catalogs_list_every_entry():
    assert set(HARDWARE) <= set(list_catalog("hardware"))
    assert set(PRECISIONS) <= set(list_catalog("precision"))


def test_an_unknown_group_or_name_lists_what_exists():
    with pytest.raises(ConfigError, match="hardware"):
        list_catalog("gpus")
    with pytest.raises(ConfigError, match="h100_sxm"):
        load_catalog_entry("hardware", "h100")


@pytest.mark.parametrize("name", HARDWARE)
def test_each_yaml_cites_its_datasheet_and_price(name):
    text = (CONFIGS_DIR / "hardware" / f"{name}.yaml").read_text()
    assert text.startswith("# ") and "atasheet" in text.split("\nname:")[0]
    cfg = load_catalog_entry("hardware", name)
    assert cfg.source.startswith(("NVIDIA", "AMD")) and "https://" in cfg.source
    assert "https://" in cfg.price_source and cfg.price_per_hour_usd > 0
    assert cfg.idle_power_w < cfg.tdp_w and cfg.boost_clock_mhz > 0


@pytest.mark.parametrize("name", HARDWARE)
def test_peaks_are_dense_and_consistent(name):
    peaks = load_catalog_entry("hardware", name).peak_tflops
    assert peaks["bf16"] == DENSE_BF16_TFLOPS[name]
    assert peaks["fp16"] == peaks["bf16"]
    if "fp8" in peaks:
        assert peaks["fp8"] == pytest.approx(2 * peaks["bf16"], rel=0.02)
        assert peaks["int8"] == peaks["fp8"]
    if "fp4" in peaks:
        assert peaks["fp4"] == pytest.approx(2 * peaks["fp8"], rel=0.02)


def test_who_has_which_formats():
    assert hardware("a100_80gb").supported_dtypes == ("bf16", "fp16", "int8")
    assert hardware("l40s").supports("fp8")
    assert hardware("mi300x").supports("fp8") and hardware("mi300x").supports("int8")
    assert [name for name in HARDWARE if hardware(name).supports("fp4")] == ["b200"]


@pytest.mark.parametrize("name", HARDWARE)
def test_driver_capacity_is_close_to_the_datasheet(name):
    cfg = load_catalog_entry("hardware", name)
    assert cfg.memory_gib == pytest.approx(cfg.memory_gb, rel=0.10)


@pytest.mark.parametrize("name", HARDWARE)
def test_each_capacity_says_where_it_comes_from(name):
    """memory_gib is the capacity CUDA reports; each entry says whether it was measured,
    published, transferred from another GPU or assumed (nvidia-smi's larger total)."""
    source = hardware(name).memory_source
    assert source.split(":")[0].split(" ")[0] in ("measured", "published", "transferred", "assumed"), source


def test_the_kv_memory_statement_names_the_capacity_and_the_reserves():
    h200 = hardware("h200")
    llama = model_spec_from_config(load_catalog_entry("model", "llama3_8b"))
    knobs = dict(block_size=16, gpu_memory_utilization=0.9, max_num_batched_tokens=8192, max_num_seqs=1024)
    plan = plan_memory(llama, h200, precision("bf16", "h200"), 1, max_model_len=8192, **knobs)
    stated = kv_memory_statement(plan, h200.memory_source)
    assert "139.80 GiB as CUDA reports it: measured" in stated and "non-torch" in stated
    given = plan_memory(llama, h200, precision("bf16", "h200"), 1, max_model_len=8192, num_gpu_blocks_override=56057, **knobs)
    assert kv_memory_statement(given, h200.memory_source).startswith("56,057 KV blocks per GPU as given")


def test_units_are_converted_once_at_the_boundary():
    h100 = hardware("h100_sxm")
    assert h100.peak_flops["bf16"] == pytest.approx(989.4e12)
    assert h100.peak_flops["fp8"] == pytest.approx(1978.9e12)
    assert h100.memory_bytes == pytest.approx(79.18 * 2**30, rel=1e-4)  # CUDA's capacity, not nvidia-smi's 81559 MiB
    assert h100.memory_bandwidth == pytest.approx(3.35e12)
    assert h100.interconnect_bandwidth == pytest.approx(450e9)  # NVLink 4, one direction
    assert h100.interconnect_latency_s == pytest.approx(6e-6)
    assert h100.vector_flops == pytest.approx(66.9e12)


def test_newer_chips_move_more_bytes():
    bandwidth = {name: hardware(name).memory_bandwidth for name in HARDWARE}
    assert bandwidth["b200"] > bandwidth["mi300x"] > bandwidth["h200"] > bandwidth["h100_sxm"]
    assert bandwidth["h100_sxm"] > bandwidth["a100_80gb"] > bandwidth["l40s"]
    links = {name: hardware(name).interconnect_bandwidth for name in HARDWARE}
    assert links["b200"] > links["h100_sxm"] > links["a100_80gb"] > links["h100_pcie"] > links["l40s"]


def test_bad_hardware_fields_are_named():
    cfg = load_catalog_entry("hardware", "h100_sxm")
    with pytest.raises(ConfigError, match="tf32"):
        hardware_spec_from_config(OmegaConf.merge(cfg, {"peak_tflops": {"tf32": 494.7}}))
    with pytest.raises(ConfigError, match="peak_tflops.fp8 must be > 0"):
        hardware_spec_from_config(OmegaConf.merge(cfg, {"peak_tflops": {"fp8": 0.0}}))
    with pytest.raises(ConfigError, match="memory_gib"):
        hardware_spec_from_config(OmegaConf.merge(cfg, {"memory_gib": 0.0}))


# ---- precisions --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PRECISIONS)
def test_each_precision_starts_with_a_one_line_comment(name):
    first, second = (CONFIGS_DIR / "precision" / f"{name}.yaml").read_text().splitlines()[:2]
    assert first.startswith("# ") and second == f"name: {name}"


def test_kv_cache_auto_means_the_model_dtype():
    resolved = {name: precision(name).kv_cache_dtype for name in PRECISIONS}
    assert resolved == {
        "bf16": "bf16",
        "fp8": "bf16",  # vLLM's "auto": fp8 W8A8 still caches bf16 K/V
        "fp8_kv": "fp8",
        "bf16_kv8": "fp8",
        "int8": "bf16",  # weight-only formats compute in bf16
        "int4": "bf16",
        "fp4": "bf16",
    }


def test_weight_only_formats_carry_their_group_scales():
    assert precision("int4").is_weight_only
    assert precision("int4").weight_bytes_per_param == pytest.approx(0.5 + 2 / 128)
    assert precision("int8").weight_bytes_per_param == pytest.approx(1 + 2 / 128)
    assert precision("fp8").weight_bytes_per_param == 1.0  # per-tensor scales: negligible
    assert precision("fp4").weight_bytes_per_param == pytest.approx(0.5 + 1 / 16)  # NVFP4


def test_the_reference_precisions_match_the_yaml_files():
    assert {p.name: p for p in REFERENCE_PRECISIONS} == {name: precision(name) for name in PRECISIONS}


def test_fp8_on_an_a100_is_refused_naming_what_it_supports():
    with pytest.raises(ConfigError) as err:
        precision("fp8", on="a100_80gb")
    message = str(err.value)
    assert "no fp8 tensor cores" in message and "bf16, fp16, int8" in message
    assert "int4" in message  # a catalog precision that does run there


def test_fp4_runs_only_on_blackwell():
    assert precision("fp4", on="b200").activation_dtype == "fp4"
    with pytest.raises(ConfigError, match="no fp4 tensor cores"):
        precision("fp4", on="h200")


def test_unknown_or_inconsistent_dtypes_are_refused():
    cfg = load_catalog_entry("precision", "bf16")
    with pytest.raises(ConfigError, match="bf16, fp16, fp8, int8, int4, fp4"):
        precision_spec_from_config(OmegaConf.merge(cfg, {"weight_dtype": "int3"}), hardware("h100_sxm"))
    with pytest.raises(ConfigError, match="auto, bf16, fp16, fp8"):
        precision_spec_from_config(OmegaConf.merge(cfg, {"kv_cache_dtype": "int4"}), hardware("h100_sxm"))
    wider = OmegaConf.merge(cfg, {"activation_dtype": "fp8"})
    with pytest.raises(ConfigError, match="wider than"):
        precision_spec_from_config(wider, hardware("h100_sxm"))
