"""Explicit Arrow schemas of the output tables and a chunked, atomic Parquet writer."""

from __future__ import annotations

import os
from pathlib import Path

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

    The file is written under a temporary name and renamed on `close()`, so a reader never
    sees a half-written file; `close()` after an interruption still leaves a valid file of
    every row recorded so far.
    """

    def __init__(self, path: Path, schema: pa.Schema, chunk_rows: int = 65536) -> None:
        self.path = Path(path)
        self.schema = schema
        self.chunk_rows = chunk_rows
        self._tmp_path = self.path.with_name(self.path.name + ".tmp")
        self._writer = pq.ParquetWriter(self._tmp_path, schema, compression="zstd")
        self._rows: list[tuple] = []
        self.num_rows = 0

    def append(self, row: tuple) -> None:
        self._rows.append(row)
        if len(self._rows) >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        columns = list(zip(*self._rows))
        arrays = [pa.array(col, type=field.type) for col, field in zip(columns, self.schema)]
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        self.num_rows += len(self._rows)
        self._rows = []

    def close(self) -> None:
        if self._writer is None:
            return
        self.flush()
        self._writer.close()
        self._writer = None
        os.replace(self._tmp_path, self.path)
