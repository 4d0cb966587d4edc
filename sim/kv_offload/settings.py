"""The `kv_offload` config group and the hardware's host side, checked, as a KVOffloadSpec.

Called by `sim.config.build` with plain mappings (no DictConfig past there). Every refusal is
one ConfigError naming the key and what would work: a tier larger than the host memory of the
node, a tier with no bandwidth, a disk tier with no host tier in front, offloading without the
prefix cache's block identities.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from sim.errors import ConfigError
from sim.kv_offload.link import LinkSpec
from sim.kv_offload.spec import KVOffloadSpec, TierSpec

GIB = 2**30
GB = 1e9
US = 1e-6
POLICIES = ("lru", "arc")  # vLLM's built-in cache policies


def _number(cfg: Mapping[str, Any], key: str, prefix: str) -> float:
    value = cfg.get(key, 0.0)
    value = 0.0 if value is None else value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{prefix}.{key}={value!r} must be a finite number")
    if value < 0:
        raise ConfigError(f"{prefix}.{key}={value!r} must be zero or positive")
    return float(value)


def kv_offload_spec(
    cfg: Mapping[str, Any],
    hardware: Mapping[str, Any],
    *,
    tp: int,
    num_replicas: int,
    max_gpus_per_node: int,
    block_size: int,
    block_bytes: int,
    num_layers: int,
    max_num_seqs: int,
    enable_prefix_caching: bool,
) -> KVOffloadSpec | None:
    """None when offloading is off (`kv_offload=none`, or `cpu_size_gib` 0)."""
    cpu_gib = _number(cfg, "cpu_size_gib", "kv_offload")
    disk_gib = _number(cfg, "disk_size_gib", "kv_offload")
    if cpu_gib == 0.0:
        if disk_gib > 0.0:
            raise ConfigError(
                f"kv_offload.disk_size_gib={disk_gib:g} needs a host tier in front of it: set"
                " kv_offload.cpu_size_gib > 0 (or kv_offload=cpu_disk)"
            )
        return None
    policy = cfg.get("eviction_policy", "lru")
    if policy not in POLICIES:
        raise ConfigError(
            f"kv_offload.eviction_policy={policy!r} is not modelled; choose one of {', '.join(POLICIES)}"
        )
    if not enable_prefix_caching:
        raise ConfigError(
            "kv_offload needs block identities: set scheduler.enable_prefix_caching=true, or kv_offload=none"
        )
    name = hardware.get("name", "?")
    host_gb = _number(hardware, "host_memory_gb", "hardware")
    bandwidth = _number(hardware, "host_link_bandwidth_gbps", "hardware")
    if bandwidth == 0.0:
        raise ConfigError(
            f"hardware.host_link_bandwidth_gbps is not given for {name}: an offload tier needs the"
            " host link's bandwidth (e.g. hardware.host_link_bandwidth_gbps=54.8 for PCIe gen5 x16)"
        )
    if host_gb == 0.0:
        raise ConfigError(
            f"hardware.host_memory_gb is not given for {name}: an offload tier must fit the host"
            " memory (e.g. hardware.host_memory_gb=2000)"
        )
    gpus_per_node = max(1, max_gpus_per_node)
    replicas_per_node = max(1, min(num_replicas, gpus_per_node // tp))
    cpu_bytes = cpu_gib * GIB
    if cpu_bytes * replicas_per_node > host_gb * GB:
        raise ConfigError(
            f"kv_offload.cpu_size_gib={cpu_gib:g} x {replicas_per_node} replica(s) per node ="
            f" {cpu_bytes * replicas_per_node / GB:,.0f} GB exceeds hardware.host_memory_gb="
            f"{host_gb:g}; at most {host_gb * GB / replicas_per_node / GIB:,.0f} GiB per replica fits"
        )
    bytes_per_block_all_ranks = block_bytes * tp
    num_cpu_blocks = int(cpu_bytes // bytes_per_block_all_ranks)
    if num_cpu_blocks < 1:
        raise ConfigError(
            f"kv_offload.cpu_size_gib={cpu_gib:g} holds no KV block of"
            f" {bytes_per_block_all_ranks / 2**20:.1f} MiB; raise it"
        )
    latency_s = _number(hardware, "host_link_latency_us", "hardware") * US
    per_copy_s = _number(hardware, "host_link_per_copy_us", "hardware") * US
    link = LinkSpec(bandwidth * GB, latency_s, per_copy_s)
    cpu = TierSpec(
        name="cpu", size_bytes=cpu_bytes, num_blocks=num_cpu_blocks, read=link, write=link,
        source=f"{hardware.get('host_link') or 'host link'}: {hardware.get('host_link_source') or 'not stated'}",
    )  # fmt: skip
    disk = None
    if disk_gib > 0.0:
        disk = _disk_tier(cfg, disk_gib, bytes_per_block_all_ranks)
    return KVOffloadSpec(
        cpu=cpu,
        disk=disk,
        block_size=block_size,
        block_bytes=block_bytes,
        copies_per_block=1 if cfg.get("cross_layer_blocks", True) else 2 * num_layers,
        max_concurrent_loads=max_num_seqs,
        eviction_policy=policy,
    )


def _disk_tier(cfg: Mapping[str, Any], disk_gib: float, bytes_per_block: int) -> TierSpec:
    read = _number(cfg, "disk_read_bandwidth_gbps", "kv_offload")
    write = _number(cfg, "disk_write_bandwidth_gbps", "kv_offload")
    for key, value in (("disk_read_bandwidth_gbps", read), ("disk_write_bandwidth_gbps", write)):
        if value == 0.0:
            raise ConfigError(
                f"kv_offload.{key} is not given: a disk tier of {disk_gib:g} GiB needs its"
                f" bandwidth (e.g. kv_offload.{key}=7)"
            )
    latency_s = _number(cfg, "disk_latency_us", "kv_offload") * US
    num_blocks = int(disk_gib * GIB // bytes_per_block)
    if num_blocks < 1:
        raise ConfigError(f"kv_offload.disk_size_gib={disk_gib:g} holds no KV block; raise it")
    return TierSpec(
        name="disk",
        size_bytes=disk_gib * GIB,
        num_blocks=num_blocks,
        read=LinkSpec(read * GB, latency_s),
        write=LinkSpec(write * GB, latency_s),
        source=f"disk: {cfg.get('disk_source') or 'not stated'}",
    )
