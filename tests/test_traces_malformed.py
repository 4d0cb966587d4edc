"""Malformed traces: each defect gives a TraceError naming the file and the line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sim.errors import TraceError
from sim.workload import TraceColumns, WorkloadSpec, build_requests

AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
GOOD_AZURE = "2023-11-16 18:15:46.6805900,374,44\n"


def load(path: Path, trace_format: str, **kw: object) -> None:
    cfg = WorkloadSpec(name="bad", arrival="trace", trace=str(path), trace_format=trace_format, **kw)  # type: ignore[arg-type]
    list(build_requests(cfg, np.random.SeedSequence(0)))


def expect(path: Path, trace_format: str, *fragments: str, **kw: object) -> str:
    with pytest.raises(TraceError) as info:
        load(path, trace_format, **kw)
    msg = str(info.value)
    assert str(path) in msg
    for f in fragments:
        assert f in msg, msg
    return msg


@pytest.mark.parametrize(
    "body, fragments",
    [
        ("TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.68,374\n",
         ("line 1", "missing column(s) 'GeneratedTokens'", "columns found: 'TIMESTAMP', 'ContextTokens'")),
        (AZURE_HEADER + GOOD_AZURE + "2023-11-16 18:15:47.0,abc,44\n", ("line 3", "'ContextTokens'", "'abc'")),
        (AZURE_HEADER + GOOD_AZURE + "yesterday,374,44\n", ("line 3", "'TIMESTAMP'", "'yesterday'")),
        (AZURE_HEADER + GOOD_AZURE + GOOD_AZURE + "2023-11-16 18:15:47.0,374,-5\n", ("line 4", "negative token count")),
        (AZURE_HEADER + GOOD_AZURE + "2023-11-16 18:15:40.0,374,44\n", ("line 3", "earlier than the previous row")),
        (AZURE_HEADER + GOOD_AZURE + "2023-11-16 18:15:47.0,374.5,44\n", ("line 3", "not a whole number")),
        (AZURE_HEADER + GOOD_AZURE + "2023-11-16 18:15:47.0,0,44\n", ("line 3", "at least 1 token")),
        (AZURE_HEADER + GOOD_AZURE + "2023-11-16 18:15:47.0,374\n", ("line 3", "expected 3 fields")),
        (AZURE_HEADER, ("line 2", "empty")),
        ("", ("line 1", "empty")),
    ],
    ids=["missing-column", "bad-number", "bad-timestamp", "negative", "backwards", "fraction", "zero",
         "short-row", "header-only", "empty"],
)
def test_azure_csv_defects(tmp_path: Path, body: str, fragments: tuple[str, ...]) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(body)
    expect(path, "azure", *fragments)


MOON = '{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [1, 2]}\n'


@pytest.mark.parametrize(
    "body, fragments",
    [
        (MOON + '{"timestamp": 10, "input_length": 600, "output_length": 5}\n',
         ("line 2", "missing column(s) 'hash_ids'", "columns found: 'timestamp'")),
        (MOON + '{"timestamp": 10, "input_length": 600,\n', ("line 2", "not valid JSON")),
        (MOON + "[1, 2, 3]\n", ("line 2", "expected a JSON object")),
        (MOON + '{"timestamp": 10, "input_length": -600, "output_length": 5, "hash_ids": [1]}\n',
         ("line 2", "negative token count")),
        (MOON + '{"timestamp": 10, "input_length": "many", "output_length": 5, "hash_ids": [1]}\n',
         ("line 2", "'input_length'", "'many'")),
        ('{"timestamp": 500, "input_length": 6, "output_length": 5, "hash_ids": [1]}\n' + "\n" + MOON,
         ("line 3", "earlier than the previous row")),
        (MOON + '{"timestamp": 10, "input_length": 6, "output_length": 5, "hash_ids": ["x"]}\n',
         ("line 2", "'hash_ids'", "not an integer")),
        ("\n\n", ("line 1", "empty")),
    ],
    ids=["missing-key", "bad-json", "not-object", "negative", "bad-number", "backwards", "bad-hash", "empty"],
)
def test_mooncake_jsonl_defects(tmp_path: Path, body: str, fragments: tuple[str, ...]) -> None:
    path = tmp_path / "trace.jsonl"
    path.write_text(body)
    expect(path, "mooncake", *fragments)


def test_parquet_missing_column_and_negative_row(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"arrived_at": [0.0, 1.0], "num_prefill_tokens": [5, 6]}), path)
    expect(path, "auto", "missing column(s) 'num_decode_tokens'", "columns found: 'arrived_at', 'num_prefill_tokens'")
    pq.write_table(pa.table({"arrived_at": [0.0, 1.0, 2.0], "num_prefill_tokens": [5, 6, 7],
                             "num_decode_tokens": [1, -2, 3]}), path)
    expect(path, "auto", "row 2", "negative token count")


def test_not_a_parquet_file(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    path.write_text("hello")
    expect(path, "parquet", "not a readable Parquet file")


def test_lengths_file_errors_surface_through_lengths_from(tmp_path: Path) -> None:
    path = tmp_path / "lengths.csv"
    path.write_text("num_prefill_tokens,num_decode_tokens\n10,2\n-1,3\n")
    cfg = WorkloadSpec(name="x", arrival="poisson", rate=1.0, num_requests=5, lengths_from=str(path))
    with pytest.raises(TraceError, match=r"lengths\.csv line 3: .*negative"):
        build_requests(cfg, np.random.SeedSequence(0))


def test_generic_csv_defects_name_configured_columns(tmp_path: Path) -> None:
    path = tmp_path / "g.csv"
    path.write_text("t,in,out\n0,5,1\n1,nan,1\n")
    cols = TraceColumns(arrival="t", prompt_tokens="in", output_tokens="out")
    expect(path, "csv", "line 3", "'in'", "'nan'", columns=cols)
