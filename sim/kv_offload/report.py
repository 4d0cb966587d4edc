"""The KV-offload lines of the printed summary (sim.metrics.report calls `offload_lines`)."""

from __future__ import annotations

from typing import Any

from sim.metrics.cells import ms as _ms, pct as _pct


def _gb(num_bytes: float) -> str:
    return f"{num_bytes / 1e9:,.1f} GB"


def _rate(v: float | None) -> str:
    return "-" if v is None else f"{v:,.2f}/s"


def offload_lines(offload: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    spec = offload["spec"]
    lines = []
    for name, tier in offload["tiers"].items():
        ts = spec["tiers"][name]
        label = "host tier" if name == "cpu" else "disk tier"
        link, _, source = ts["source"].partition(": ")
        lines += [
            f"{'KV offload' if name == 'cpu' else '':<13}{label} {ts['size_gib']:,.0f} GiB"
            f" ({ts['tokens']:,} tokens per replica), read {ts['read_gbps']:.1f} GB/s,"
            f" write {ts['write_gbps']:.1f} GB/s ({link}; {source.split(' (')[0].split(':')[0]})",
            f"{'':<13}  hits {tier['hit_blocks']:,} blocks ({_pct(tier['hit_rate_of_lookups'])} of"
            f" {tier['lookup_blocks']:,} looked up), {_gb(tier['bytes_loaded'])} loaded;"
            f" stored {tier['stored_blocks']:,} blocks ({_gb(tier['bytes_stored'])});"
            f" evicted {tier['evicted_blocks']:,}",
        ]
    links = offload["links"]
    cached = summary["kv_cache"].get("prefix_cache_hit_rate")
    tier_rate = offload["tier_hit_rate"]
    hbm_rate = None if cached is None or tier_rate is None else cached - tier_rate
    lines += [
        f"{'':<13}loads {offload['loads']:,}, mean {_ms(offload['load_time_mean_s'])} ms"
        f" (max {_ms(offload['load_time_max_s'])} ms) from submit to landed;"
        f" link busy host->GPU {_pct(links['host_to_gpu']['utilization'])},"
        f" GPU->host {_pct(links['gpu_to_host']['utilization'])}",
        f"{'':<13}prompt tokens cached {_pct(cached)}: {_pct(hbm_rate)} found in HBM,"
        f" {_pct(tier_rate)} loaded from the tiers",
    ]
    base = offload.get("hbm_only")
    if base:
        lat = summary["latency_s"]["ttft"]
        b = base["ttft_s"]
        kv = summary["kv_cache"]
        lines += [
            "",
            f"{'':<14}{'hit rate':>10}{'TTFT mean':>11}{'p50':>10}{'p90':>10}{'p99':>10}"
            f"{'goodput':>10}   (TTFT in ms)",
            f"{'HBM only':<14}{_pct(base['prefix_cache_hit_rate']):>10}{_ms(b['mean']):>11}"
            f"{_ms(b['p50']):>10}{_ms(b['p90']):>10}{_ms(b['p99']):>10}"
            f"{_rate(base['goodput_requests_per_s']):>10}   (the same run without kv_offload: hbm_only/)",
            f"{'with offload':<14}{_pct(kv.get('prefix_cache_hit_rate')):>10}{_ms(lat['mean']):>11}"
            f"{_ms(lat['p50']):>10}{_ms(lat['p90']):>10}{_ms(lat['p99']):>10}"
            f"{_rate(summary['goodput']['requests_per_s']):>10}",
        ]
    return lines
