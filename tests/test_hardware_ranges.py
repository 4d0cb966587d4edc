"""Every hardware key is checked against its range when the entry is loaded: a value that
would silently bend a result (negative latency, idle power above TDP, negative price) is
refused with the key named, for every catalog entry and from the command line."""

from __future__ import annotations

import re

import pytest
from omegaconf import OmegaConf

from sim.catalog import hardware_spec_from_config, list_catalog, load_catalog_entry
from sim.config.build import build_run_spec
from sim.errors import ConfigError
from conftest import compose_config

BAD_VALUES = [
    ("interconnect_latency_us", -1.0, "interconnect_latency_us must be >= 0"),
    ("interconnect_bandwidth_gbps", -450.0, "interconnect_bandwidth_gbps must be >= 0"),
    ("tdp_w", -700.0, "tdp_w must be >= 0"),
    ("idle_power_w", -5.0, "idle_power_w must be >= 0"),
    ("idle_power_w", 5000.0, "idle_power_w (5000) exceeds tdp_w"),
    ("price_per_hour_usd", -2.0, "price_per_hour_usd must be >= 0"),
    ("boost_clock_mhz", -1980.0, "boost_clock_mhz must be >= 0"),
    ("memory_gb", -80.0, "memory_gb must be >= 0"),
    ("vector_tflops", -1.0, "vector_tflops must be > 0"),
    ("memory_bandwidth_tbps", 0.0, "memory_bandwidth_tbps must be > 0"),
    ("max_gpus_per_node", 0, "max_gpus_per_node must be >= 1"),
    ("sustained_clock_ratio", 1.5, "sustained_clock_ratio must be in (0, 1]"),
    ("sustained_clock_ratio", 0.0, "sustained_clock_ratio must be > 0"),
    ("memory_gib", 1e30, "memory_gib=1e+30 is beyond any accelerator"),
]


@pytest.mark.parametrize("name", list_catalog("hardware"))
@pytest.mark.parametrize("key,value,message", BAD_VALUES)
def test_every_entry_refuses_every_out_of_range_key(name, key, value, message):
    cfg = OmegaConf.merge(load_catalog_entry("hardware", name), {key: value})
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        hardware_spec_from_config(cfg)
    assert f"hardware {name}" in str(err.value)


def test_idle_power_with_an_unknown_tdp_is_accepted():
    cfg = OmegaConf.merge(load_catalog_entry("hardware", "h100_sxm"), {"tdp_w": 0.0})
    assert hardware_spec_from_config(cfg).tdp_w == 0.0  # 0: no energy figures


def test_a_plain_mapping_is_checked_as_well():
    fields = OmegaConf.to_container(load_catalog_entry("hardware", "h100_sxm"))
    fields["interconnect_latency_us"] = -6
    with pytest.raises(ConfigError, match="interconnect_latency_us"):
        hardware_spec_from_config(fields)
    del fields["memory_bandwidth_tbps"]
    fields["interconnect_latency_us"] = 6
    with pytest.raises(ConfigError, match="memory_bandwidth_tbps must be given"):
        hardware_spec_from_config(fields)
    fields["memory_bandwidth_tbps"] = 3.35
    fields["max_gpus_per_node"] = 8.5
    with pytest.raises(ConfigError, match="max_gpus_per_node must be a whole number"):
        hardware_spec_from_config(fields)


def test_the_command_line_reaches_the_same_checks():
    with pytest.raises(ConfigError, match="hardware.*interconnect_latency_us"):
        build_run_spec(compose_config(["hardware.interconnect_latency_us=-3"]))


@pytest.mark.parametrize("name", list_catalog("hardware"))
def test_every_catalog_entry_is_within_range(name):
    hardware_spec_from_config(load_catalog_entry("hardware", name))
