"""Read CSV, JSONL and Parquet request files into a TraceTable.

Readers only split a file into raw per-column values plus each row's line number; the
checks on the values are shared (`trace_table.build_table`). Tables are cached by path,
modification time and column spec, because a sweep replays the same trace many times.

CSV and JSONL files may be gzip-compressed (recognised by their first bytes, whatever the
name), since that is how traces ship. Text must be UTF-8; a byte that is not, a gzip stream
cut short or a CSV field over the csv module's limit is a TraceError naming the line.
"""

from __future__ import annotations

import csv
import functools
import gzip
import json
import os
import zlib
from contextlib import contextmanager
from typing import Any, Iterator

from sim.errors import TraceError
from sim.workload.trace_table import ColumnSpec, TraceTable, build_table

READERS = ("csv", "jsonl", "parquet")


def load_table(path: str, reader: str, spec: ColumnSpec, *, with_arrival: bool = True) -> TraceTable:
    """Parse `path` with `reader` (csv | jsonl | parquet); raises TraceError on a bad file."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise TraceError(f"{path}: cannot open trace ({exc.strerror})") from exc
    if os.path.isdir(path):
        raise TraceError(f"{path}: is a directory, not a trace file; give the file inside it")
    return _load_cached(os.path.abspath(path), st.st_mtime_ns, st.st_size, reader, spec, with_arrival)


@functools.lru_cache(maxsize=16)
def _load_cached(
    path: str, mtime_ns: int, size: int, reader: str, spec: ColumnSpec, with_arrival: bool
) -> TraceTable:
    del mtime_ns, size  # part of the cache key only: an edited file is read again
    needed = spec.names(with_arrival)
    if reader == "csv":
        raw, lines, label = _read_csv(path, needed)
    elif reader == "jsonl":
        raw, lines, label = _read_jsonl(path, needed)
    elif reader == "parquet":
        raw, lines, label = _read_parquet(path, needed)
    else:
        raise ValueError(f"unknown reader {reader!r}")
    return build_table(path, label, raw, lines, spec, with_arrival)


def _missing(path: str, where: str, needed: list[str], found: list[str]) -> TraceError | None:
    lost = [c for c in needed if c not in found]
    if not lost:
        return None
    return TraceError(
        f"{path} {where}: missing column(s) {', '.join(map(repr, lost))}; "
        f"columns found: {', '.join(map(repr, found)) or '(none)'}"
    )


def _empty(path: str, where: str) -> TraceError:
    return TraceError(f"{path} {where}: no requests in the file (it is empty)")


GZIP_MAGIC = b"\x1f\x8b"


@contextmanager
def _text_lines(path: str) -> Iterator[Iterator[str]]:
    """The file's lines as UTF-8 text (a leading byte-order mark dropped), decompressed when
    it is gzip. Lines are decoded one by one, so a byte that is not UTF-8 is named with the
    line it is on; gzip errors become TraceErrors too."""
    with open(path, "rb") as probe:
        is_gzip = probe.read(2) == GZIP_MAGIC
    with gzip.open(path, "rb") if is_gzip else open(path, "rb") as binary:
        try:
            yield _decoded(path, binary)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise TraceError(f"{path}: not a readable gzip file ({exc or 'cut short'})") from None


def _decoded(path: str, binary: Any) -> Iterator[str]:
    for lineno, line in enumerate(binary, start=1):
        try:
            yield line.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise TraceError(
                f"{path} line {lineno}: byte {line[exc.start:exc.start + 1]!r} is not UTF-8 text; "
                "convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
            ) from None


def _read_csv(path: str, needed: list[str]) -> tuple[dict[str, list[Any]], list[int], str]:
    """Header row names the columns; blank lines are skipped; a missing trailing newline is fine."""
    raw: dict[str, list[Any]] = {c: [] for c in needed}
    lines: list[int] = []
    with _text_lines(path) as f:
        rows = csv.reader(f)
        try:
            _read_csv_rows(path, rows, needed, raw, lines)
        except csv.Error as exc:
            raise TraceError(f"{path} line {rows.line_num}: not valid CSV ({exc})") from None
    if not lines:
        raise _empty(path, "line 2")
    return raw, lines, "line"


def _read_csv_rows(
    path: str, rows: Any, needed: list[str], raw: dict[str, list[Any]], lines: list[int]
) -> None:
    """The header, then every row, into `raw` and `lines`."""
    header = next(rows, None)
    if header is None:
        raise _empty(path, "line 1")
    header = [h.strip() for h in header]
    err = _missing(path, "line 1", needed, header)
    if err:
        raise err
    index = [(c, header.index(c)) for c in needed]
    for row in rows:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != len(header):
            raise TraceError(
                f"{path} line {rows.line_num}: expected {len(header)} fields like the header, found {len(row)}"
            )
        for c, j in index:
            raw[c].append(row[j])
        lines.append(rows.line_num)


def _read_jsonl(path: str, needed: list[str]) -> tuple[dict[str, list[Any]], list[int], str]:
    """One JSON object per line; blank lines are skipped."""
    raw: dict[str, list[Any]] = {c: [] for c in needed}
    lines: list[int] = []
    with _text_lines(path) as f:
        for lineno, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise TraceError(f"{path} line {lineno}: not valid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict):
                raise TraceError(f"{path} line {lineno}: expected a JSON object, found {type(obj).__name__}")
            try:
                for c in needed:
                    raw[c].append(obj[c])
            except KeyError:
                raise _missing(path, f"line {lineno}", needed, list(obj)) from None
            lines.append(lineno)
    if not lines:
        raise _empty(path, "line 1")
    return raw, lines, "line"


def _read_parquet(path: str, needed: list[str]) -> tuple[dict[str, list[Any]], list[int], str]:
    """Columns by name; `lines` are 1-based row numbers (Parquet has no lines)."""
    import pyarrow.parquet as pq  # imported lazily: only Parquet replays pay for it

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a non-Parquet file
        raise TraceError(f"{path}: not a readable Parquet file ({exc})") from exc
    err = _missing(path, "schema", needed, list(pf.schema_arrow.names))
    if err:
        raise err
    table = pf.read(columns=needed)
    if table.num_rows == 0:
        raise _empty(path, "row 1")
    raw: dict[str, Any] = {}
    for c in needed:
        col = table.column(c)
        is_list = str(col.type).startswith(("list", "large_list"))
        raw[c] = col.to_pylist() if is_list else col.to_numpy(zero_copy_only=False)
    return raw, list(range(1, table.num_rows + 1)), "row"
