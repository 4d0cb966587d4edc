"""Per-tier counters of a run, summed over replicas, for summary.json and the printed table.

Per tier: blocks and tokens loaded back (hits), blocks and bytes stored and loaded, blocks
evicted; per link direction: jobs, bytes, busy time. Plus how long loads took (submit to
landed, queueing included) and which share of the finished requests' prompt tokens came from a
tier rather than from HBM.
"""

from __future__ import annotations

from typing import Any, Sequence

from sim.kv_offload.connector import OffloadingConnector
from sim.kv_offload.link import CopyQueue
from sim.kv_offload.spec import KVOffloadSpec


def _queue(queues: Sequence[CopyQueue], duration_s: float) -> dict[str, Any]:
    busy = sum(q.busy_s for q in queues)
    return {
        "jobs": sum(q.num_jobs for q in queues),
        "bytes": sum(q.bytes_moved for q in queues),
        "busy_s": busy,
        "utilization": busy / (duration_s * len(queues)) if duration_s > 0 and queues else None,
    }


def offload_summary(
    spec: KVOffloadSpec, connectors: Sequence[OffloadingConnector], duration_s: float
) -> dict[str, Any]:
    tiers: dict[str, Any] = {}
    names = ["cpu"] + (["disk"] if spec.disk is not None else [])
    for name in names:
        counters = [getattr(c, name).counters for c in connectors]
        hit_blocks = sum(k.hit_blocks for k in counters)
        lookups = sum(k.lookups_blocks for k in counters)
        tiers[name] = {
            "hit_blocks": hit_blocks,
            "hit_tokens": hit_blocks * spec.block_size,
            "lookup_blocks": lookups,
            "hit_rate_of_lookups": hit_blocks / lookups if lookups else None,
            "stored_blocks": sum(k.stored_blocks for k in counters),
            "bytes_stored": sum(k.bytes_stored for k in counters),
            "bytes_loaded": sum(k.bytes_loaded for k in counters),
            "evicted_blocks": sum(k.evicted_blocks for k in counters),
            "store_refused_blocks": sum(k.store_refused_blocks for k in counters),
            "resident_blocks_at_end": sum(len(getattr(c, name)) for c in connectors),
        }
    stats = [c.stats for c in connectors]
    num_loads = sum(s.num_loads for s in stats)
    prompt = sum(s.finished_prompt_tokens for s in stats)
    tier_hits = sum(s.finished_tier_hit_tokens for s in stats)
    links = {
        "host_to_gpu": _queue([c.h2d for c in connectors], duration_s),
        "gpu_to_host": _queue([c.d2h for c in connectors], duration_s),
    }
    if spec.disk is not None:
        links["disk_to_host"] = _queue([c.disk_read for c in connectors], duration_s)
        links["host_to_disk"] = _queue([c.disk_write for c in connectors], duration_s)
    return {
        "spec": spec.describe(),
        "tiers": tiers,
        "links": links,
        "loads": num_loads,
        "load_time_mean_s": sum(s.load_time_s for s in stats) / num_loads if num_loads else None,
        "load_time_max_s": max((s.max_load_time_s for s in stats), default=0.0) if num_loads else None,
        "lookups_delayed": sum(s.num_delayed for s in stats),
        # share of the finished requests' prompt tokens loaded from a tier at first scheduling
        "tier_hit_rate": tier_hits / prompt if prompt else None,
    }


def hbm_only_figures(summary: dict[str, Any]) -> dict[str, Any]:
    """What the side-by-side comparison shows of the run without offload."""
    kv = summary["kv_cache"]
    return {
        "prefix_cache_hit_rate": kv.get("prefix_cache_hit_rate"),
        "ttft_s": summary["latency_s"]["ttft"],
        "e2e_s": summary["latency_s"]["e2e"],
        "requests_finished": summary["requests"]["finished"],
        "goodput_requests_per_s": summary["goodput"]["requests_per_s"],
        "evicted_blocks": kv.get("evicted_blocks"),
    }
