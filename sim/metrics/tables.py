"""Explicit Arrow schemas of the output tables, a chunked atomic Parquet writer, and the batch
that publishes a run's tables together."""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from sim.cost.breakdown import OP_CLASSES

REQUEST_STATUS_FINISHED = "finished"
REQUEST_STATUS_REJECTED = "rejected"
REQUEST_STATUS_UNFINISHED = "unfinished"

REQUESTS_SCHEMA = pa.schema(
    [
        ("request_id", pa.int64()),
        ("replica_id", pa.int32()),
        ("status", pa.string()),  # finished | rejected | unfinished (in flight at the end)
        ("reject_reason", pa.string()),
        ("arrival_s", pa.float64()),
        ("first_scheduled_s", pa.float64()),
        ("first_token_s", pa.float64()),
        ("finish_s", pa.float64()),
        ("prompt_tokens", pa.int64()),
        ("output_tokens", pa.int64()),  # requested
        ("output_tokens_generated", pa.int64()),
        ("cached_tokens", pa.int64()),  # prefix-cache hit at first scheduling
        ("preemptions", pa.int32()),
        ("ttft_s", pa.float64()),
        ("tpot_s", pa.float64()),  # mean time per output token after the first
        ("e2e_s", pa.float64()),
        ("session_id", pa.int64()),  # closed loop and sessions; -1 for open-loop requests
        ("turn", pa.int32()),  # 0-based turn within the session
    ]
)

_STEP_BASE_FIELDS = [
    ("replica_id", pa.int32()),
    ("step", pa.int64()),
    ("start_s", pa.float64()),
    ("duration_s", pa.float64()),
    ("gpu_time_s", pa.float64()),
    ("overhead_s", pa.float64()),
    ("num_scheduled_tokens", pa.int64()),
    ("num_prefill_tokens", pa.int64()),
    ("num_prefill_seqs", pa.int32()),
    ("num_decode_seqs", pa.int32()),
    ("decode_context_tokens", pa.int64()),
    ("num_running", pa.int32()),
    ("num_waiting", pa.int32()),
    ("num_preempted", pa.int32()),
    ("kv_blocks_used", pa.int64()),
    ("kv_usage", pa.float64()),
    ("flops", pa.float64()),  # per GPU of the TP group
    ("bytes", pa.float64()),  # per GPU of the TP group
    ("bound", pa.string()),  # compute | memory | latency
]
_STEP_OP_FIELDS = [
    (f"{op}_{metric}", pa.float64())
    for op in OP_CLASSES
    for metric in ("time_s", "flops", "bytes")
]
STEPS_SCHEMA = pa.schema(_STEP_BASE_FIELDS + _STEP_OP_FIELDS)

# One row per replica per bin of `output.timeline_interval_s` simulated seconds (see
# sim/metrics/timeline.py for where each event is counted).
TIMELINE_SCHEMA = pa.schema(
    [
        ("t_s", pa.float64()),  # bin start
        ("replica_id", pa.int32()),
        ("arrivals", pa.int64()),  # requests routed to the replica (rejected ones included)
        ("rejected", pa.int64()),
        ("admitted", pa.int64()),  # requests scheduled for the first time
        ("finished", pa.int64()),
        ("prefill_tokens", pa.int64()),  # prompt tokens computed (prefill chunks, recomputation)
        ("output_tokens", pa.int64()),  # tokens generated
        ("prefix_cache_queries_tokens", pa.int64()),  # prompt tokens of the admitted requests
        ("prefix_cache_hits_tokens", pa.int64()),  # of which found in the prefix cache
        ("busy_s", pa.float64()),  # engine step time (GPU + CPU overhead) inside the bin
        ("waiting_mean", pa.float64()),  # time-averaged requests waiting
        ("running_mean", pa.float64()),  # time-averaged requests running
        ("waiting_max", pa.int64()),  # most requests waiting after a step that started in the bin
        ("kv_usage_mean", pa.float64()),  # time-averaged fraction of KV blocks in use
    ]
)


class ChunkedParquetWriter:
    """Buffers rows (tuples in schema order) and writes a row group every `chunk_rows` rows.

    Rows wait as Python tuples only `batch_rows` at a time: each full batch becomes an Arrow
    record batch (8 bytes a number instead of a Python object each), so a wide table such as
    steps.parquet holds a few MB while a row group fills, not a few hundred. The row groups
    are the same `chunk_rows` rows as if every row had waited as a tuple, and so are the bytes
    of the file (`batch_rows` divides `chunk_rows`, a multiple of Parquet's write batch).

    The file is written under a temporary name unique to this writer (two runs sharing a
    folder never write into one file) and renamed on `close()`, so a reader never sees a
    half-written file; `close()` after an interruption still leaves a valid file of every row
    recorded so far. Inside `staged_outputs()`, `close()` leaves the complete file under its
    temporary name and the batch renames every file at once (or removes them, on failure).
    """

    def __init__(
        self, path: Path, schema: pa.Schema, chunk_rows: int = 65536, batch_rows: int = 4096
    ) -> None:
        if chunk_rows % batch_rows:
            raise ValueError(f"batch_rows={batch_rows} must divide chunk_rows={chunk_rows}")
        self.path = Path(path)
        self.schema = schema
        self.chunk_rows = chunk_rows
        self.batch_rows = batch_rows
        self._tmp_path = unique_tmp_path(self.path)
        self._batch = _STAGED.get()
        if self._batch is not None:
            self._batch.track(self)
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(
            self._tmp_path, schema, compression="zstd"
        )
        self._rows: list[tuple] = []
        self._record_batches: list[pa.RecordBatch] = []  # of the row group being filled
        self._num_batched = 0  # rows in _record_batches
        self.num_rows = 0

    def append(self, row: tuple) -> None:
        self._rows.append(row)
        if len(self._rows) >= self.batch_rows:
            self._to_record_batch()
            if self._num_batched >= self.chunk_rows:
                self.flush()

    def _to_record_batch(self) -> None:
        columns = list(zip(*self._rows))
        arrays = [pa.array(col, type=field.type) for col, field in zip(columns, self.schema)]
        self._record_batches.append(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self._num_batched += len(self._rows)
        self._rows = []

    def flush(self) -> None:
        """Write what is buffered as one row group."""
        if self._rows:
            self._to_record_batch()
        if not self._num_batched:
            return
        assert self._writer is not None
        table = pa.Table.from_batches(self._record_batches, schema=self.schema)
        self._writer.write_table(table, row_group_size=self._num_batched)
        self.num_rows += self._num_batched
        self._record_batches, self._num_batched = [], 0

    def close(self) -> None:
        if self._writer is None:
            return
        self.flush()
        self._writer.close()
        self._writer = None
        if self._batch is None:
            os.replace(self._tmp_path, self.path)

    @property
    def written_path(self) -> Path:
        """Where the closed file is now: its final name, or its temporary one while a staged
        writer waits to be published with the rest of the run's tables."""
        return self.path if self.path.exists() and not self._tmp_path.exists() else self._tmp_path

    def abort(self) -> None:
        """Drop the file: close what is open, ignoring errors (the disk may be full), and
        remove the temporary file."""
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - a failed close of a file about to be removed
                pass
        self._tmp_path.unlink(missing_ok=True)

    def publish(self) -> None:
        """Give the closed file its final name (staged writers only)."""
        assert self._writer is None, "close() the writer before publishing it"
        os.replace(self._tmp_path, self.path)


def read_columns(path: Path, columns: list[str]) -> pa.Table:
    """`columns` of a Parquet file. Through `ParquetFile`, not `pq.read_table`: the latter
    loads pyarrow's dataset and compute modules, a tenth of a second of start-up a short run
    would pay for nothing."""
    return pq.ParquetFile(path).read(columns=columns)


def unique_tmp_path(path: Path) -> Path:
    """A hidden temporary name next to `path` that no other writer, in this process or
    another, uses: `.requests.parquet.<pid>-<random>.tmp`."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


class OutputBatch:
    """The tables of one run: published together when the run ends (complete or
    interrupted), removed together when it fails, so a run that crashes never leaves
    complete-looking tables under their final names."""

    def __init__(self) -> None:
        self._writers: list[ChunkedParquetWriter] = []
        self._published: list[Path] = []  # final names given out so far, tables and JSON

    def track(self, writer: ChunkedParquetWriter) -> None:
        self._writers.append(writer)

    def publish(self) -> None:
        for writer in self._writers:
            writer.close()  # a writer the run did not close: nothing is lost
            writer.publish()
            self._published.append(writer.path)
        self._writers = []

    def published(self, path: Path) -> None:
        """Note a file written outside the batch (summary.json), to remove it on failure."""
        self._published.append(path)

    def discard(self) -> list[Path]:
        """Remove every file of the batch, temporary or already published (a run that fails
        while writing its manifest must not leave tables without one); returns them."""
        removed = [w._tmp_path for w in self._writers if w._tmp_path.exists()]
        removed += [path for path in self._published if path.exists()]
        for writer in self._writers:
            writer.abort()
        for path in self._published:
            path.unlink(missing_ok=True)
        self._writers, self._published = [], []
        return removed


_STAGED: ContextVar[OutputBatch | None] = ContextVar("staged_outputs", default=None)


@contextmanager
def staged_outputs() -> Iterator[OutputBatch]:
    """Writers created inside this block join one batch, which the caller publishes; if the
    block raises, every file of the batch is removed before the exception goes on."""
    batch = OutputBatch()
    token = _STAGED.set(batch)
    try:
        yield batch
    except BaseException:
        batch.discard()
        raise
    finally:
        _STAGED.reset(token)
