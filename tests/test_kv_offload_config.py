"""The kv_offload config group and the hardware's host side: sizes in blocks as vLLM counts
them, one clear refusal per bad setting (naming the key), and the H200's host link equal to
the fit of its committed measurement."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, compose_config
from sim.catalog import list_catalog
from sim.config.build import build_run_spec
from sim.errors import ConfigError


def _spec(*overrides: str):
    return build_run_spec(compose_config(["hardware=h200", *overrides]))


def test_every_option_composes_and_none_is_off():
    assert list_catalog("kv_offload") == ["cpu", "cpu_disk", "none"]
    assert _spec().kv_offload is None and _spec("kv_offload=none").kv_offload is None
    spec = _spec("kv_offload=cpu_disk")
    assert spec.kv_offload.disk is not None and spec.kv_offload.disk.read.bandwidth == 7e9


def test_the_host_tier_counts_blocks_over_all_tp_ranks_as_vllm_does():
    # Llama-3.1-8B bf16: 16 tokens x 32 layers x K,V x 8 heads x 128 x 2 bytes = 2 MiB a block;
    # 200 GiB over TP1 is 102,400 blocks; over TP2 each GPU has half the heads: the same count.
    spec = _spec("kv_offload=cpu").kv_offload
    assert spec.block_bytes == 2 * 2**20 and spec.cpu.num_blocks == 102_400
    assert spec.copies_per_block == 1 and spec.max_concurrent_loads == 1024
    tp2 = _spec("kv_offload=cpu", "parallel=tp2").kv_offload
    assert tp2.block_bytes == 2**20 and tp2.cpu.num_blocks == 102_400
    per_layer = _spec("kv_offload=cpu", "kv_offload.cross_layer_blocks=false").kv_offload
    assert per_layer.copies_per_block == 64


def test_the_h200_link_is_its_measurement():
    spec = _spec("kv_offload=cpu").kv_offload
    link = spec.cpu.read
    path = REPO_ROOT / "calibration" / "fit_host_link.py"
    module_spec = importlib.util.spec_from_file_location("fit_host_link", path)
    fit_host_link = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(fit_host_link)
    mean = fit_host_link.fit()["mean"]
    assert link.bandwidth / 1e9 == pytest.approx(mean["bandwidth_gbps"], rel=0.005)
    assert link.latency_s * 1e6 == pytest.approx(mean["latency_us"], rel=0.02)
    assert link.per_copy_s * 1e6 == pytest.approx(mean["per_copy_us"], rel=0.02)
    assert spec.cpu.source.startswith("pcie5_x16: measured")


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        (["kv_offload=cpu", "kv_offload.cpu_size_gib=2000"],
         "kv_offload.cpu_size_gib=2000 x 1 replica(s) per node = 2,147 GB exceeds hardware.host_memory_gb=2000"),
        (["kv_offload=cpu", "kv_offload.cpu_size_gib=240", "parallel.replicas=8"],
         "kv_offload.cpu_size_gib=240 x 8 replica(s) per node = 2,062 GB exceeds"),
        (["kv_offload=cpu", "hardware.host_link_bandwidth_gbps=0"], "hardware.host_link_bandwidth_gbps is not given"),
        (["kv_offload=cpu", "hardware.host_memory_gb=0"], "hardware.host_memory_gb is not given"),
        (["kv_offload=cpu_disk", "kv_offload.disk_read_bandwidth_gbps=0"],
         "kv_offload.disk_read_bandwidth_gbps is not given"),
        (["kv_offload=cpu_disk", "kv_offload.disk_write_bandwidth_gbps=0"],
         "kv_offload.disk_write_bandwidth_gbps is not given"),
        (["kv_offload=cpu_disk", "kv_offload.cpu_size_gib=0"], "kv_offload.disk_size_gib=3500 needs a host tier"),
        (["kv_offload=cpu", "kv_offload.cpu_size_gib=-1"], "kv_offload.cpu_size_gib=-1.0 must be zero or positive"),
        (["kv_offload=cpu", "kv_offload.eviction_policy=lfu"], "kv_offload.eviction_policy='lfu' is not modelled"),
        (["kv_offload=cpu", "scheduler.enable_prefix_caching=false"], "scheduler.enable_prefix_caching=true"),
        (["kv_offload=cpu", "kv_offload.cpu_size_gib=0.001"], "kv_offload.cpu_size_gib=0.001 holds no KV block"),
        (["kv_offload=cpu", "hardware.host_link_latency_us=-1"], "host_link_latency_us must be >= 0"),
    ],
)  # fmt: skip
def test_a_bad_offload_setting_is_refused_naming_the_key(overrides, fragment):
    with pytest.raises(ConfigError, match=None) as err:
        _spec(*overrides)
    assert fragment in str(err.value)


def test_the_command_line_prints_one_error_line_and_exits_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sim", "hardware=h200", "kv_offload=cpu", "kv_offload.cpu_size_gib=4000",
         f"hydra.run.dir={tmp_path}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: kv_offload.cpu_size_gib=4000")


@pytest.mark.parametrize("name", list_catalog("hardware"))
def test_every_gpu_has_a_host_side_that_says_where_it_comes_from(name):
    spec = build_run_spec(compose_config([f"hardware={name}", "kv_offload=cpu"])).kv_offload
    assert spec.cpu.read.bandwidth > 0 and spec.cpu.num_blocks > 0
    _, _, source = spec.cpu.source.partition(": ")
    assert source.split()[0] in ("measured", "transferred", "assumed:"), source
