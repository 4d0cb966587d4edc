"""The speculative-decoding lines of the printed summary, and the with/without comparison."""

from __future__ import annotations

from typing import Any

from sim.metrics.cells import ms as _ms, pct as _pct


def speculative_lines(summary: dict[str, Any]) -> list[str]:
    """Acceptance (vLLM's definitions), the drafter's share, the ITL per chunk; [] without."""
    spec = summary.get("speculative")
    if not spec:
        return []
    per_pos = "  ".join(_pct(r) for r in spec["per_position_acceptance_rate"])
    length = spec["mean_acceptance_length"]
    chunk = spec["itl_per_chunk_s"]
    lines = [
        "",
        f"speculative  {spec['method']} k={spec['num_speculative_tokens']}"
        f" (drafter {spec['drafter']}, TP{spec['drafter_tp']})"
        f"   acceptance rate {_pct(spec['acceptance_rate'])}"
        f"   mean acceptance length {'-' if length is None else f'{length:.2f}'} tokens per step",
        f"             per position {per_pos}   drafter {_pct(spec['drafter_share_of_gpu_time'])} of GPU time"
        f"   ITL per chunk p50 {_ms(chunk['p50'])} ms, p99 {_ms(chunk['p99'])} ms"
        " (ITL above pools every token: tokens of one chunk arrive together)",
        f"             acceptance law: {spec['acceptance_source']}",
    ]
    lines += comparison_lines(summary.get("speculative_comparison"))
    return lines


def comparison_lines(comparison: dict[str, Any] | None) -> list[str]:
    if not comparison:
        return []
    method = comparison["method"]
    lines = [
        "",
        f"with and without {method} (k={comparison['num_speculative_tokens']}), same requests:",
        f"{'req/s':>7}{'batch off/on':>14}{'TPOT p50 off':>14}{'on':>8}{'speed-up':>10}"
        f"{'TPOT p99 off':>14}{'on':>8}{'TTFT p99 off':>14}{'on':>9}{'tok/s off':>11}{'on':>8}{'accept':>8}",
    ]
    for row in comparison["rows"]:
        off, on = row["off"], row["on"]
        speedup = row["tpot_p50_speedup"]
        lines.append(
            f"{row['rate']:>7g}{off['mean_batch']:>8.0f} /{on['mean_batch']:>4.0f}"
            f"{_ms(off['tpot_p50_s']):>14}{_ms(on['tpot_p50_s']):>8}"
            f"{'-' if speedup is None else f'{speedup:.2f}x':>10}"
            f"{_ms(off['tpot_p99_s']):>14}{_ms(on['tpot_p99_s']):>8}"
            f"{_ms(off['ttft_p99_s']):>14}{_ms(on['ttft_p99_s']):>9}"
            f"{off['output_tokens_per_s']:>11,.0f}{on['output_tokens_per_s']:>8,.0f}"
            f"{_pct(on['acceptance_rate']):>8}"
            + ("" if on["meets_slo"] else "  (on misses SLO)")
            + ("" if off["meets_slo"] else "  (off misses SLO)")
        )
    lines += ["(latencies in ms; batch: mean running requests)", f"answer       {comparison['answer']}"]
    return lines
