"""The chunked Parquet writer: rows held as Arrow batches while a row group fills give the
same file, byte for byte, as rows held as tuples until the row group is written."""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sim.metrics.tables import REQUESTS_SCHEMA, STEPS_SCHEMA, ChunkedParquetWriter, read_columns


def _request_row(i: int) -> tuple:
    status = ("finished", "rejected", "unfinished")[i % 3]
    reason = "queue full: 5 requests already waiting" if status == "rejected" else ""
    nan = math.nan
    return (i, i % 4, status, reason, i * 0.01, nan if i % 3 else i * 0.01 + 1e-3, i * 0.02, nan,
            100 + i, 20, i % 20, 16 * (i % 5), i % 2, 0.1 * i, nan, 0.3, -1, 0)  # fmt: skip


def _step_row(i: int) -> tuple:
    base = (0, i, i * 0.03, 0.03, 0.025, 0.005, 64, 32, 1, 31, 4096, 32, 7, 0, 120, 0.25, 1e12, 5e9, "memory")
    return base + tuple(float(i * k) for k in range(len(STEPS_SCHEMA) - len(base)))


@pytest.mark.parametrize("schema, make_row", [(REQUESTS_SCHEMA, _request_row), (STEPS_SCHEMA, _step_row)])
def test_batched_rows_write_the_same_bytes(tmp_path, schema, make_row):
    num_rows = 2 * 1024 + 300  # two full row groups and a partial one
    files = []
    for batch_rows in (1024, 256, 1):  # 1024 = every row a tuple until its row group is written
        path = tmp_path / f"t{batch_rows}.parquet"
        writer = ChunkedParquetWriter(path, schema, chunk_rows=1024, batch_rows=batch_rows)
        for i in range(num_rows):
            writer.append(make_row(i))
        writer.close()
        files.append(path.read_bytes())
        meta = pq.ParquetFile(path).metadata
        assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [1024, 1024, 300]
    assert files[0] == files[1] == files[2]
    table = read_columns(tmp_path / "t256.parquet", [schema.names[0], schema.names[2]])
    assert table.num_rows == num_rows and table.column_names == [schema.names[0], schema.names[2]]


def test_empty_and_exactly_full(tmp_path):
    schema = pa.schema([("x", pa.int64())])
    empty = ChunkedParquetWriter(tmp_path / "empty.parquet", schema, chunk_rows=8, batch_rows=4)
    empty.close()
    assert pq.read_table(tmp_path / "empty.parquet").num_rows == 0
    full = ChunkedParquetWriter(tmp_path / "full.parquet", schema, chunk_rows=8, batch_rows=4)
    for i in range(16):
        full.append((i,))
    full.close()
    assert pq.ParquetFile(tmp_path / "full.parquet").metadata.num_row_groups == 2
    assert full.num_rows == 16


def test_batch_must_divide_the_row_group(tmp_path):
    with pytest.raises(ValueError, match="divide"):
        ChunkedParquetWriter(tmp_path / "x.parquet", pa.schema([("x", pa.int64())]), chunk_rows=10, batch_rows=4)
