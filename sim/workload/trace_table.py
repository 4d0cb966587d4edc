"""A parsed trace as NumPy columns, and the checks that turn raw cell values into it.

Readers (`trace_readers`) only split files into raw per-column values and remember the line
each row came from; every check on the values lives here, so a bad cell gives the same
message, naming file and line, whatever the file format.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from sim.errors import TraceError
from sim.workload.request_spec import MAX_TOKENS

_UNITS_PER_SECOND = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}  # divide: exact for whole ms


@dataclass(frozen=True)
class ColumnSpec:
    """Which columns hold what, for one file format (hashable, so tables can be cached)."""

    arrival: str | None  # None: a lengths-only file
    arrival_unit: str  # s | ms | us | ns | datetime
    prompt_tokens: str
    output_tokens: str
    prefix_hashes: str | None = None
    prefix_block_tokens: int = 0

    def names(self, with_arrival: bool) -> list[str]:
        """Columns a reader must find (arrival only when the caller needs times)."""
        cols = [self.prompt_tokens, self.output_tokens]
        if with_arrival and self.arrival is not None:
            cols.insert(0, self.arrival)
        if self.prefix_hashes is not None:
            cols.append(self.prefix_hashes)
        return cols


@dataclass(frozen=True)
class TraceTable:
    """Requests of one file, in file order. Arrays are read-only: tables are cached and shared.

    `arrival_s` is in seconds on the trace's own clock (for datetime columns: since the first
    row), None for a lengths-only read. `lines` gives each row's 1-based line in the file (row
    number for Parquet), so downstream errors and RequestSpec.source_line can point at it.
    """

    path: str
    arrival_s: np.ndarray | None
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    prefix_hashes: tuple[tuple[int, ...], ...] | None
    prefix_block_tokens: int
    lines: np.ndarray

    def __len__(self) -> int:
        return len(self.prompt_tokens)


class CellErrors:
    """Formats 'file line N: column X: problem' messages for one file."""

    def __init__(self, path: str, label: str, lines: Sequence[int]):
        self.path, self.label, self.lines = path, label, lines

    def error(self, index: int, column: str, problem: str) -> TraceError:
        return TraceError(f"{self.path} {self.label} {self.lines[index]}: column {column!r}: {problem}")


def build_table(
    path: str, label: str, raw: dict[str, list[Any]], lines: list[int], spec: ColumnSpec, with_arrival: bool
) -> TraceTable:
    """Check and convert the raw columns of a non-empty file into a TraceTable."""
    errs = CellErrors(path, label, lines)
    arrival = None
    if with_arrival and spec.arrival is not None:
        arrival = _arrival_seconds(raw[spec.arrival], spec, errs)
    hashes = None
    if spec.prefix_hashes is not None:
        hashes = tuple(_hash_list(v, i, spec.prefix_hashes, errs) for i, v in enumerate(raw[spec.prefix_hashes]))
    return TraceTable(
        path=path,
        arrival_s=_frozen(arrival) if arrival is not None else None,
        prompt_tokens=_frozen(_token_counts(raw[spec.prompt_tokens], spec.prompt_tokens, errs)),
        output_tokens=_frozen(_token_counts(raw[spec.output_tokens], spec.output_tokens, errs)),
        prefix_hashes=hashes,
        prefix_block_tokens=spec.prefix_block_tokens if hashes is not None else 0,
        lines=_frozen(np.asarray(lines, dtype=np.int64)),
    )


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _numbers(values: Sequence[Any], column: str, errs: CellErrors) -> np.ndarray:
    """float64 array of the values; on failure, find the first bad cell and name it.

    Booleans are not numbers here: NumPy would read JSON `true` as 1, a silent 1-token request."""
    try:
        if not _holds_booleans(values):
            arr = np.asarray(values, dtype=np.float64)
            if arr.ndim == 1 and np.isfinite(arr).all():
                return arr
    except (ValueError, TypeError):
        pass
    for i, v in enumerate(values):
        try:
            ok = not isinstance(v, (bool, np.bool_, list, dict)) and math.isfinite(float(v))
        except (ValueError, TypeError):
            ok = False
        if not ok:
            raise errs.error(i, column, f"cannot read {v!r} as a finite number")
    raise errs.error(0, column, "values are not numbers")  # unreachable in practice


def _holds_booleans(values: Sequence[Any]) -> bool:
    if isinstance(values, np.ndarray):
        return values.dtype == np.bool_ or (
            values.dtype == object and any(isinstance(v, (bool, np.bool_)) for v in values)
        )
    return any(type(v) is bool for v in values)


def _token_counts(values: Sequence[Any], column: str, errs: CellErrors) -> np.ndarray:
    """int64 token counts; negative, zero, fractional and absurdly large counts are errors,
    not clamped (a count of 2**63 would wrap negative as an int64)."""
    arr = _numbers(values, column, errs)
    bad = np.flatnonzero((arr < 1) | (arr != np.floor(arr)) | (arr > MAX_TOKENS))
    if len(bad):
        i = int(bad[0])
        v = arr[i]
        if v > MAX_TOKENS:
            raise errs.error(
                i, column, f"token count {values[i]!r} is beyond any model's context (at most 2**40)"
            )
        if v < 0:
            raise errs.error(i, column, f"negative token count {values[i]!r}")
        if v != math.floor(v):
            raise errs.error(i, column, f"token count {values[i]!r} is not a whole number")
        raise errs.error(i, column, f"token count {values[i]!r}: every request needs at least 1 token")
    return arr.astype(np.int64)


def _arrival_seconds(values: Sequence[Any], spec: ColumnSpec, errs: CellErrors) -> np.ndarray:
    """Arrival times in seconds; they must never decrease from one row to the next."""
    column = spec.arrival
    assert column is not None
    if spec.arrival_unit == "datetime":
        ticks = _datetimes_ns(values, column, errs)
        order_key: np.ndarray = ticks
        seconds = (ticks - ticks[0]) / 1e9  # exact int ns difference, then one rounding
    else:
        seconds = _numbers(values, column, errs) / _UNITS_PER_SECOND[spec.arrival_unit]
        order_key = seconds
    back = np.flatnonzero(np.diff(order_key) < 0)
    if len(back):
        i = int(back[0]) + 1
        raise errs.error(
            i, column, f"timestamp {values[i]!r} is earlier than the previous row's {values[i - 1]!r}; "
            "sort the trace by arrival time"
        )
    return seconds


def _datetimes_ns(values: Sequence[Any], column: str, errs: CellErrors) -> np.ndarray:
    """Naive ISO 8601 timestamps (any number of fractional digits up to 9) as int64 ns."""
    try:
        dt = np.asarray(values, dtype="datetime64[ns]")
        if not np.isnat(dt).any():
            return dt.astype(np.int64)
    except (ValueError, TypeError):
        pass
    for i, v in enumerate(values):
        try:
            bad = np.isnat(np.datetime64(v, "ns"))
        except (ValueError, TypeError):
            bad = True
        if bad:
            raise errs.error(i, column, f"cannot read {v!r} as a date and time (expected like 2023-11-16 18:17:03.97)")
    raise errs.error(0, column, "values are not timestamps")  # unreachable in practice


_HASH_SPLIT = re.compile(r"[\s,;]+")


def _hash_list(value: Any, i: int, column: str, errs: CellErrors) -> tuple[int, ...]:
    """A row's prefix-block hashes: a JSON/Parquet list, or text like '[1, 2, 3]' or '1 2 3'."""
    if isinstance(value, str):
        parts = [p for p in _HASH_SPLIT.split(value.strip().strip("[]")) if p]
    elif isinstance(value, (list, tuple, np.ndarray)):
        parts = list(value)
    else:
        raise errs.error(i, column, f"expected a list of integer hashes, found {value!r}")
    if all(type(p) is int for p in parts):  # fast path: JSON lists of ints
        return tuple(parts)
    out = []
    for p in parts:
        try:
            if isinstance(p, str):
                out.append(int(p))
            elif isinstance(p, (int, np.integer)) and not isinstance(p, bool):
                out.append(int(p))
            else:
                raise ValueError
        except ValueError:
            raise errs.error(i, column, f"hash {p!r} in {value!r} is not an integer") from None
    return tuple(out)
