"""What an offload deployment is, in SI units: its tiers and the links that feed them.

Built from the `kv_offload` config group and the hardware's host link by `sim.config.build`;
the connector (sim.kv_offload.connector) and the summary read it. A tier's size follows vLLM's
`--kv-offloading-size` (vllm/v1/kv_offload/cpu/spec.py, `CPUOffloadingSpec`): bytes of host
memory per engine, over all its TP ranks, so its blocks number
size // (bytes of one block on one GPU x TP size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sim.kv_offload.link import LinkSpec


@dataclass(frozen=True, slots=True)
class TierSpec:
    name: str  # "cpu" (host memory) or "disk"
    size_bytes: float  # per engine replica, all its TP ranks
    num_blocks: int
    read: LinkSpec  # out of the tier, toward HBM (host->GPU; disk->host)
    write: LinkSpec  # into the tier (GPU->host; host->disk)
    source: str = ""  # where the link figures come from


@dataclass(frozen=True, slots=True)
class KVOffloadSpec:
    """The host tier, an optional disk tier behind it, and how blocks are copied."""

    cpu: TierSpec
    disk: TierSpec | None
    block_size: int  # tokens per block (the GPU block: vLLM's default offloaded block size)
    block_bytes: int  # one block on one GPU: what each TP rank moves over its own link
    copies_per_block: int  # memcpy per block: 1 in the cross-layer layout, 2 x layers otherwise
    max_concurrent_loads: int  # vLLM caps loads in flight at max_num_seqs
    eviction_policy: str = "lru"

    def describe(self) -> dict[str, Any]:
        tiers = [self.cpu] + ([self.disk] if self.disk else [])
        return {
            "block_bytes_per_gpu": self.block_bytes,
            "copies_per_block": self.copies_per_block,
            "eviction_policy": self.eviction_policy,
            "tiers": {
                t.name: {
                    "size_gib": t.size_bytes / 2**30,
                    "num_blocks": t.num_blocks,
                    "tokens": t.num_blocks * self.block_size,
                    "read_gbps": t.read.bandwidth / 1e9,
                    "write_gbps": t.write.bandwidth / 1e9,
                    "read_latency_us": t.read.latency_s * 1e6,
                    "per_copy_us": t.read.per_copy_s * 1e6,
                    "source": t.source,
                }
                for t in tiers
            },
        }
