"""A plan's rows ranked, printed, and written: cheapest configuration that meets the SLOs
first, then those that miss at the target, then those that cannot run.

Printed in the units people read (ms, %, $); plan.parquet keeps SI units (s, fractions) and
one row per candidate, the throughput-interactivity curve of each as list columns. A plan sizes
for a request rate (open-loop traffic) or a number of users (closed loop): the row's
`load_unit`; in the Parquet table the capacity columns then end in `_users`, not `_rate`.
A P/D candidate's replica is one prefill+decode group (`scaling_unit: pd_group`): the table
says so under its rows, and GPUs and dollars count both pools.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

LEVEL = 0.05  # two $/h within this fraction are level


def rank(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in ranking order, each with its `rank` (1 = the answer)."""

    def key(row: dict[str, Any]) -> tuple:
        if row["status"] == "ok":
            group = {"estimated": 1}.get(row.get("sizing"), 0 if row.get("meets_slo") else 2)
        else:
            group = {"misses_slo": 3}.get(row["status"], 4)
        usd = row.get("usd_per_hour")
        return (group, math.inf if usd is None else usd, row.get("gpus") or math.inf,
                row.get("usd_per_million_output_tokens_at_goodput") or math.inf)  # fmt: skip

    ranked = [dict(r) for r in sorted(rows, key=key)]
    for i, row in enumerate(ranked, 1):
        row["rank"] = i
        row["chosen"] = i == 1 and row["status"] == "ok" and bool(row.get("meets_slo"))
    return ranked


def capacity_uncertainty(row: dict[str, Any]) -> float | None:
    """(seed spread + bracket width) / capacity: how far the capacity could move."""
    rate = row.get("capacity_per_replica_rate")
    if not rate:
        return None
    return ((row.get("seed_spread_rate") or 0.0) + (row.get("bracket_width_rate") or 0.0)) / rate


def replicas_at_low_end(row: dict[str, Any], target_rate: float) -> int | None:
    """Replicas the target would need if the capacity sat at the low end of its uncertainty."""
    u, rate = capacity_uncertainty(row), row.get("capacity_per_replica_rate")
    if u is None or not rate or u >= 1:
        return None
    return math.ceil(target_rate / (rate * (1 - u)) - 1e-9)


def _f(v: Any, fmt: str, scale: float = 1.0, prefix: str = "") -> str:
    if v is None:
        return "-"
    return prefix + format(v * scale if scale != 1.0 else v, fmt)


COLUMNS = (  # header, width, value
    ("#", 2, lambda r: str(r["rank"])),
    ("candidate", 22, lambda r: r["candidate"]),
    ("cost model", 11, lambda r: r.get("cost_model_source") or "-"),
    ("{unit}/replica", 13, lambda r: _capacity_cell(r)),
    ("+-", 5, lambda r: _f(_unc(r), ".0%")),
    ("replicas", 8, lambda r: _f(r.get("replicas"), "d")),
    ("GPUs/rep", 8, lambda r: _f(r.get("gpus_per_replica"), "d")),
    ("GPUs", 4, lambda r: _f(r.get("gpus"), "d")),
    ("$/h", 8, lambda r: _f(r.get("usd_per_hour"), ",.2f", prefix="$")),
    ("$/M tok good", 12, lambda r: _f(r.get("usd_per_million_output_tokens_at_goodput"), ",.3f", prefix="$")),
    ("J/tok", 6, lambda r: _f(r.get("joules_per_output_token"), ".3f")),
    ("TTFT p99 ms", 11, lambda r: _f(r.get("target_ttft_p99_s"), ",.0f", 1e3)),
    ("TPOT p99 ms", 11, lambda r: _f(r.get("target_tpot_p99_s"), ",.1f", 1e3)),
    ("goodput", 7, lambda r: _f(r.get("target_goodput_fraction"), ".1%")),
)


def _unc(row: dict[str, Any]) -> float | None:
    return capacity_uncertainty(row)


def _capacity_cell(row: dict[str, Any]) -> str:
    if row.get("capacity_is_lower_bound"):
        return _f(row.get("capacity_per_replica_rate"), ".3g", prefix=">=")
    return _f(row.get("capacity_per_replica_rate"), ".2f" if _unit(row) == "req/s" else ".0f")


def _unit(row: dict[str, Any]) -> str:
    return row.get("load_unit") or "req/s"


def plan_unit(ranked: Sequence[dict[str, Any]]) -> str:
    """The load every row was sized for (one plan has one)."""
    return _unit(ranked[0]) if ranked else "req/s"


def _verdict(row: dict[str, Any]) -> str:
    if row["status"] == "infeasible":
        return "cannot run: " + _short(row.get("reason"))
    if row["status"] == "misses_slo":
        return "MISSES SLO: " + _short(row.get("reason"))
    bound = (
        "; SLOs never bound up to the largest load tried (capacity at least; longer probes:"
        " --requests)" if row.get("capacity_is_lower_bound") else ""
    )
    if row.get("sizing") == "estimated":
        return "replicas estimated from capacity (could not be the cheapest: not simulated at the target)" + bound
    return ("meets SLO" if row.get("meets_slo") else "MISSES SLO at the target") + bound


def _short(text: str | None, limit: int = 70) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_table(ranked: Sequence[dict[str, Any]]) -> str:
    unit = plan_unit(ranked)
    width = max([22, *(len(r["candidate"]) for r in ranked)])
    columns = [(h, width if h == "candidate" else w, f) for h, w, f in COLUMNS]
    head = "  ".join(
        h.format(unit=unit).rjust(w) if i > 1 else h.ljust(w) for i, (h, w, _) in enumerate(columns)
    )
    lines = [head + "  verdict"]
    for row in ranked:
        cells = [f(row) for _, _, f in columns]
        line = "  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, (_, w, _)) in enumerate(zip(cells, columns)))
        lines.append(f"{line}  {_verdict(row)}")
    if any(r.get("scaling_unit") == "pd_group" for r in ranked):
        lines.append(
            "P/D rows: a replica is one prefill+decode group (P/D p:d = p prefill and d decode"
            " instances, TP prefill:decode), scaled together; GPUs and $/h count both pools."
        )
    return "\n".join(lines)


def _replicas_text(row: dict[str, Any]) -> str:
    n = row["replicas"]
    if row.get("scaling_unit") == "pd_group":
        return (f"{n} P/D group(s) of {row['prefill_replicas']} prefill + {row['decode_replicas']} decode"
                f" instance(s) = {row['gpus']} GPUs")
    return f"{n} replica(s) = {row['gpus']} GPUs"


def answer(ranked: Sequence[dict[str, Any]], target_rate: float, slo_text: str) -> str:
    """The answer in words, with how firm it is."""
    ok = [r for r in ranked if r["status"] == "ok" and r.get("meets_slo")]
    unit = plan_unit(ranked)
    if not ok:
        return f"No candidate meets {slo_text} at {target_rate:g} {unit}: widen the candidate space or relax the SLOs."
    best = ok[0]
    text = [
        f"Answer: at {target_rate:g} {unit} within {slo_text}, the cheapest is {best['candidate']}:"
        f" {_replicas_text(best)}, {_f(best.get('usd_per_hour'), ',.2f', prefix='$')}/h,"
        f" {_f(best.get('usd_per_million_output_tokens_at_goodput'), ',.3f', prefix='$')} per M output tokens at goodput"
        f" (step times {best.get('cost_model_source')})."
    ]
    if best.get("cost_model_source") != "calibrated":
        text.append(
            f"Step times for {best['hardware']} are not calibrated on it ({best.get('cost_model_source')}):"
            " read its figures as a first estimate, less certain than the +- below."
        )
    low = replicas_at_low_end(best, target_rate)
    u = capacity_uncertainty(best)
    if u is not None:
        per = "P/D group" if best.get("scaling_unit") == "pd_group" else "replica"
        firm = f"capacity per {per} {best['capacity_per_replica_rate']:.{2 if unit == 'req/s' else 0}f} {unit} +-{u:.0%} (seed spread + bracket)"
        if low and low > best["replicas"]:
            firm += f"; at its low end it would need {low} {'groups' if best.get('scaling_unit') == 'pd_group' else 'replicas'}"
        text.append(f"Uncertainty: {firm}.")
    if len(ok) > 1 and best.get("usd_per_hour") and ok[1].get("usd_per_hour"):
        margin = ok[1]["usd_per_hour"] / best["usd_per_hour"] - 1
        text.append(
            f"Runner-up: {ok[1]['candidate']} at {_f(ok[1]['usd_per_hour'], ',.2f', prefix='$')}/h"
            + (" (level within 5%: treat as a tie)." if margin < LEVEL else f" ({margin:.0%} more).")
        )
    return "\n".join(text)


def write_parquet(ranked: Sequence[dict[str, Any]], path: Path, meta: dict[str, Any]) -> Path:
    """One row per candidate, columns in first-seen order; the plan's inputs as metadata."""
    if plan_unit(ranked) == "users":
        ranked = [{_users_key(k): v for k, v in row.items()} for row in ranked]
    names: dict[str, None] = {}
    for row in ranked:
        for key in row:
            names.setdefault(key)
    table = pa.table({n: pa.array([row.get(n) for row in ranked]) for n in names})
    table = table.replace_schema_metadata({"plan": json.dumps(meta, sort_keys=True, default=str)})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


def _users_key(key: str) -> str:
    return key[: -len("_rate")] + "_users" if key.endswith("_rate") else key
