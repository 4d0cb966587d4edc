"""The comparison as people read it (a table) and as programs read it (comparison.json)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from sim.replay.compare import MIN_REQUESTS_FOR_TAILS, distribution
from sim.replay.replay import ReplayResult

COMPARISON_FILE = "comparison.json"
LABELS = {"ttft": "TTFT", "tpot": "TPOT", "itl": "ITL", "e2e": "E2E"}
SETTING_LABELS = (
    ("max_num_seqs", "max_num_seqs"),
    ("max_num_batched_tokens", "max_num_batched_tokens"),
    ("max_model_len", "max_model_len"),
    ("block_size", "block_size"),
    ("num_gpu_blocks", "KV blocks"),
    ("kv_cache_dtype", "KV cache dtype"),
    ("enable_prefix_caching", "prefix caching"),
    ("async_scheduling", "async scheduling"),
)


def row_label(metric: str, stat: str) -> str:
    if metric == "throughput":
        return "output tok/s" if stat == "output_tokens_per_s" else "requests/s"
    return f"{LABELS[metric]} {stat} (ms)"


def _value(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if metric == "throughput":
        return f"{value:,.0f}" if value >= 100 else f"{value:,.3f}"
    ms = value * 1e3
    return f"{ms:,.1f}" if ms >= 100 else f"{ms:,.2f}"


def _error(error: float | None) -> str:
    return "n/a" if error is None else f"{error:+.1%}"


def format_table(result: ReplayResult) -> str:
    run, s = result.run, result.settings
    setup = s.known()
    head = (
        f"== replay of {run.name}: {run.num_requests:,} requests ({run.file_format}, {run.source})\n"
        f"engine       {setup.get('model')} on {setup.get('tp', 1)}x {setup.get('hardware')}"
        f"{', ' + str(setup['precision']) if 'precision' in setup else ''}"
    )
    lines = [head, _wrapped("settings", "; ".join(_settings_used(result))),
             _wrapped("simulated", " ".join(result.overrides))]
    if result.client is not None:
        lines.append(_wrapped("client", result.client.description))
    lines += [_wrapped("note", note) for note in result.notes]
    if run.num_requests < MIN_REQUESTS_FOR_TAILS:
        lines.append(f"note         fewer than {MIN_REQUESTS_FOR_TAILS} requests: latencies compared at mean and p50 only")
    width = max(len(row_label(r.metric, r.stat)) for r in result.rows)
    ranged = any(r.simulated_low is not None for r in result.rows)
    lines.append(f"{'metric':<{width}}  {'measured':>11}  {'simulated':>11}  {'error':>8}"
                 + (f"  {'simulated over the seeds':>24}" if ranged else ""))  # fmt: skip
    for r in result.rows:
        span = ""
        if r.simulated_low is not None and r.simulated_high is not None:
            low, high = _value(r.metric, r.simulated_low), _value(r.metric, r.simulated_high)
            span = f"  {f'[{low}, {high}]':>24}"
        lines.append(
            f"{row_label(r.metric, r.stat):<{width}}  {_value(r.metric, r.measured):>11}"
            f"  {_value(r.metric, r.simulated):>11}  {_error(r.error):>8}{span}"
        )
    return "\n".join(lines)


def _wrapped(label: str, text: str) -> str:
    return textwrap.fill(text, width=100, initial_indent=f"{label:<13}", subsequent_indent=" " * 13,
                         break_on_hyphens=False)


SIM_KEYS = {"num_gpu_blocks": "scheduler.num_gpu_blocks_override", "kv_cache_dtype": "precision.kv_cache_dtype"}


def _settings_used(result: ReplayResult) -> list[str]:
    """What the simulation ran with (summary.json `setup`) and where each value came from."""
    setup = result.simulated.summary.get("setup", {})
    user_keys = {o.split("=", 1)[0].lstrip("+~") for o in result.user_overrides}
    out = []
    for key, label in SETTING_LABELS:
        sim_key = SIM_KEYS.get(key, f"scheduler.{key}")
        if key not in setup:  # a setting this simulator does not model (see the notes)
            if key in result.settings.sources:
                value = getattr(result.settings, key)
                out.append(f"{label} {_setting(value)} ({result.settings.sources[key]}; not modelled)")
            continue
        if sim_key in user_keys:
            source = "override"
        elif key in result.settings.sources:
            source = result.settings.sources[key]
        elif key == "num_gpu_blocks":
            source = "simulator memory plan"
        else:
            source = "simulator default"
        out.append(f"{label} {_setting(setup[key])} ({source})")
    return out


def _setting(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:,}" if isinstance(value, int) else str(value)


def comparison_dict(result: ReplayResult) -> dict[str, Any]:
    run = result.run
    return {
        "run": run.name,
        "source": run.source,
        "format": run.file_format,
        "num_requests": run.num_requests,
        "settings": {k: {"value": v, "source": result.settings.sources.get(k, "command line")}
                     for k, v in result.settings.known().items()},
        "overrides": list(result.overrides),
        "client": None if result.client is None else {
            "max_concurrency": result.client.max_concurrency,
            "source": result.client.source,
            "requests_that_waited_for_a_slot": result.client.num_waited,
        },
        "output_stalls": None if result.stalls is None else {
            "stalls": [{"start_s": s.start_s, "end_s": s.end_s, "requests": s.num_requests,
                        "in_flight": s.num_in_flight} for s in result.stalls.stalls],  # fmt: skip
            "itl_without_stalls": distribution(result.stalls.itl_without_s),
        },
        "notes": list(result.notes),
        "definitions": {
            "ttft": "first token - send",
            "tpot": "(last token - first token) / (tokens - 1)",
            "itl": "gaps between consecutive tokens, pooled (simulated: summary.json latency_s.itl)",
            "e2e": "last token - send",
            "throughput": "output tokens (requests) / (last token - first send)",
            "error": "simulated / measured - 1",
            "units": "seconds; throughput per second",
        },
        "simulated_requests": {
            "finished": result.simulated.side.num_requests,
            "rejected": result.simulated.num_rejected,
            "unfinished": result.simulated.num_unfinished,
        },
        "rows": [r.as_dict() for r in result.rows],
        "simulator_outputs": str(result.simulated.sim_dir),
    }


def write_comparison(result: ReplayResult, path: Path | None = None) -> Path:
    path = path or result.out_dir / COMPARISON_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(comparison_dict(result), indent=2) + "\n")
    tmp.replace(path)
    return path
