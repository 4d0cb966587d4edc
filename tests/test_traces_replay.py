"""Trace replay of the shipped traces and of generic CSV/JSONL/Parquet files."""

from __future__ import annotations

import json
import math
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sim.workload import RequestSpec, TraceColumns, WorkloadSpec, build_requests
from sim.workload.registry import DATASETS, traces_dir

SEED = np.random.SeedSequence(0)


def replay(**kw: Any) -> list[RequestSpec]:
    return list(build_requests(WorkloadSpec(name="t", arrival="trace", **kw), SEED))


def shipped(name: str) -> Path:
    return Path(traces_dir()) / DATASETS[name].relpath


def azure_rows(name: str) -> list[tuple[Decimal, int, int]]:
    """Independent parse: whole seconds via datetime, the 7-digit fraction as an exact Decimal."""
    text = shipped(name).read_text()
    rows = []
    for line in text.split("\n")[1:]:
        stamp, ctx, gen = line.split(",")
        whole, frac = stamp.split(".")
        epoch = datetime.strptime(whole, "%Y-%m-%d %H:%M:%S").timestamp()
        rows.append((Decimal(int(epoch)) + Decimal("0." + frac), int(ctx), int(gen)))
    return rows


def test_azure_conv_replays_every_row_at_its_time() -> None:
    rows = azure_rows("azure_conv")
    reqs = replay(trace="azure_conv")
    assert len(reqs) == len(rows) == 19_366
    t0 = rows[0][0]
    assert [r.arrival_s for r in reqs] == [float(t - t0) for t, _, _ in rows]  # exact, not approximate
    assert [(r.prompt_tokens, r.output_tokens) for r in reqs] == [(p, o) for _, p, o in rows]
    assert [r.source_line for r in reqs] == list(range(2, 19_368))
    assert [r.request_id for r in reqs] == list(range(19_366))


def test_azure_conv_speedup_divides_times() -> None:
    rows = azure_rows("azure_conv")
    reqs = replay(trace="azure_conv", speedup=2.5)
    expected = [float((t - rows[0][0]) / Decimal("2.5")) for t, _, _ in rows]
    assert np.allclose([r.arrival_s for r in reqs], expected, rtol=1e-14, atol=0)


def test_azure_code_window_shifts_to_zero() -> None:
    rows = azure_rows("azure_code")
    rel = [float(t - rows[0][0]) for t, _, _ in rows]
    inside = [i for i, t in enumerate(rel) if 600.0 <= t < 1200.0]
    reqs = replay(trace="azure_code", start_s=600.0, end_s=1200.0)
    assert len(reqs) == len(inside)
    assert reqs[0].arrival_s == 0.0 and reqs[0].source_line == inside[0] + 2
    assert reqs[-1].arrival_s == pytest.approx(rel[inside[-1]] - rel[inside[0]])


def test_target_rate_rescales_the_mean_rate() -> None:
    reqs = replay(trace="azure_conv", target_rate=20.0)
    assert (len(reqs) - 1) / reqs[-1].arrival_s == pytest.approx(20.0)


def test_bounds_cut_a_replay() -> None:
    assert len(replay(trace="azure_conv", num_requests=100)) == 100
    rows = azure_rows("azure_conv")
    reqs = replay(trace="azure_conv", duration_s=60.0)
    assert len(reqs) == sum(1 for t, _, _ in rows if t - rows[0][0] < 60) == 191


def test_mooncake_hashes_and_times_carried() -> None:
    lines = shipped("mooncake_conversation").read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    reqs = replay(trace="mooncake_conversation")
    assert len(reqs) == len(rows) == 12_031
    for r, row in zip(reqs, rows):
        assert r.prefix_hashes == tuple(row["hash_ids"])
        assert r.prefix_block_tokens == 512
        assert len(r.prefix_hashes) == math.ceil(r.prompt_tokens / 512)
        assert r.arrival_s == (row["timestamp"] - rows[0]["timestamp"]) / 1000
        assert (r.prompt_tokens, r.output_tokens) == (row["input_length"], row["output_length"])


def test_mooncake_spread_ties_keeps_order_and_buckets() -> None:
    plain = np.array([r.arrival_s for r in replay(trace="mooncake_conversation")])
    spread = np.array([r.arrival_s for r in replay(trace="mooncake_conversation", spread_ties_s=3.0)])
    assert (np.diff(spread) >= 0).all()
    assert ((spread - plain >= 0) & (spread - plain < 3.0)).all()
    assert len(np.unique(spread)) == len(spread)  # no two requests share an instant any more


def test_mooncake_synthetic_by_name() -> None:
    reqs = replay(trace="mooncake_synthetic")
    assert len(reqs) == 3_993 and reqs[0].arrival_s == 0.0 and reqs[0].prefix_hashes


TINY = [(10.0, 5, 3, [1, 2]), (10.5, 7, 4, [1, 3]), (12.0, 9, 1, [4])]


def test_generic_csv_with_custom_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("t_ms,in,out,hashes\n" + "".join(f"{t*1000:.0f},{p},{o},\"{h}\"\n" for t, p, o, h in TINY))
    reqs = replay(
        trace=str(path),
        columns=TraceColumns(arrival="t_ms", arrival_unit="ms", prompt_tokens="in", output_tokens="out",
                             prefix_hashes="hashes", prefix_block_tokens=4),
    )
    assert [(r.arrival_s, r.prompt_tokens, r.output_tokens, r.prefix_hashes) for r in reqs] == [
        (0.0, 5, 3, (1, 2)), (0.5, 7, 4, (1, 3)), (2.0, 9, 1, (4,))
    ]
    assert reqs[0].prefix_block_tokens == 4 and [r.source_line for r in reqs] == [2, 3, 4]


def test_generic_jsonl_and_parquet_agree(tmp_path: Path) -> None:
    cols = TraceColumns(arrival="arrival_s", prompt_tokens="p", output_tokens="o", prefix_hashes="h",
                        prefix_block_tokens=16)
    jl = tmp_path / "t.jsonl"
    jl.write_text("".join(json.dumps({"arrival_s": t, "p": p, "o": o, "h": h}) + "\n\n" for t, p, o, h in TINY))
    pqt = tmp_path / "t.parquet"
    pq.write_table(pa.table({"arrival_s": [r[0] for r in TINY], "p": [r[1] for r in TINY],
                             "o": [r[2] for r in TINY], "h": [r[3] for r in TINY]}), pqt)
    a, b = replay(trace=str(jl), columns=cols), replay(trace=str(pqt), columns=cols)
    key = lambda rs: [(r.arrival_s, r.prompt_tokens, r.output_tokens, r.prefix_hashes) for r in rs]  # noqa: E731
    assert key(a) == key(b) == [(0.0, 5, 3, (1, 2)), (0.5, 7, 4, (1, 3)), (2.0, 9, 1, (4,))]
    assert [r.source_line for r in a] == [1, 3, 5] and [r.source_line for r in b] == [1, 2, 3]


def test_vidur_style_csv_reads_with_default_columns(tmp_path: Path) -> None:
    path = tmp_path / "vidur.csv"
    path.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,10,2\n0.25,20,3")
    assert [r.arrival_s for r in replay(trace=str(path))] == [0.0, 0.25]


def test_oversized_trace_rows_are_kept() -> None:
    reqs = list(build_requests(WorkloadSpec(name="t", arrival="trace", trace="azure_conv"), SEED, max_model_len=2048))
    assert len(reqs) == 19_366 and max(r.prompt_tokens + r.output_tokens for r in reqs) > 2048
