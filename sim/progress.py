"""Progress on stderr for work that lasts more than a few seconds of wall time: a run's
requests (`Progress`) and a plan's candidates (`TaskProgress`), each with its total and an ETA.

On a terminal the line is redrawn in place; off one (CI, logs) a line every 10 s is enough.
The ETA extrapolates the rate so far: done / elapsed, applied to what is left.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

_SHOW_AFTER_S = 2.0  # runs shorter than this print nothing
_REFRESH_S = 0.5
_LOG_REFRESH_S = 10.0
_CHECK_EVERY_STEPS = 256  # reading the clock every step would cost more than the step
_BAR_WIDTH = 24


def format_duration(seconds: float) -> str:
    """`42 s`, `3 min 05 s`, `1 h 02 min`."""
    s = max(int(round(seconds)), 0)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def eta_s(done: float, total: float, elapsed_s: float) -> float | None:
    """Seconds left at the rate so far; None before anything is done."""
    if done <= 0 or total <= 0:
        return None
    return elapsed_s * max(total - done, 0.0) / done


def bar(fraction: float, width: int = _BAR_WIDTH) -> str:
    filled = int(round(min(max(fraction, 0.0), 1.0) * width))
    return "[" + "#" * filled + "." * (width - filled) + "]"


class _Line:
    """One status line: redrawn in place on a terminal, appended (rarely) elsewhere."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last_print = 0.0
        self.printed = False

    def due(self, now: float, force: bool = False) -> bool:
        refresh = _REFRESH_S if self.tty else _LOG_REFRESH_S
        return force or now - self.last_print >= refresh

    def write(self, text: str, now: float) -> None:
        self.last_print = now
        self.stream.write(("\r" + text + "\x1b[K") if self.tty else text + "\n")
        self.stream.flush()
        self.printed = True

    def close(self) -> None:
        if self.printed and self.tty:
            self.stream.write("\n")
            self.stream.flush()


class Progress:
    """A simulation's progress: finished requests of `total_requests` (or simulated time of
    `horizon_s` when the count is unknown), wall time and ETA."""

    def __init__(
        self,
        enabled: bool = True,
        total_requests: int | None = None,
        horizon_s: float | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.enabled = enabled
        self.total_requests = total_requests
        self.horizon_s = horizon_s
        self._start = time.perf_counter()
        self._calls = 0
        self._line = _Line(stream)

    def tick(self, sim_time_s: float, num_finished: int) -> None:
        self._calls += 1
        if not self.enabled or self._calls % _CHECK_EVERY_STEPS:
            return
        now = time.perf_counter()
        elapsed = now - self._start
        if elapsed < _SHOW_AFTER_S or not self._line.due(now):
            return
        self._line.write(self.line(sim_time_s, num_finished, elapsed), now)

    def line(self, sim_time_s: float, num_finished: int, elapsed_s: float) -> str:
        done, total = self._fraction(sim_time_s, num_finished)
        parts = [f"[sim] {sim_time_s:,.1f} s simulated", f"{num_finished:,} requests finished"]
        if self.total_requests:
            parts[1] = f"{num_finished:,}/{self.total_requests:,} requests finished"
        parts += [f"{self._calls:,} steps", f"{format_duration(elapsed_s)} wall"]
        left = eta_s(done, total, elapsed_s)
        if total:
            parts.insert(0, f"{bar(done / total)} {done / total:.0%}")
            parts.append("ETA " + (format_duration(left) if left is not None else "-"))
        return " | ".join(parts)

    def _fraction(self, sim_time_s: float, num_finished: int) -> tuple[float, float]:
        if self.total_requests:
            return float(num_finished), float(self.total_requests)
        if self.horizon_s:
            return sim_time_s, self.horizon_s
        return 0.0, 0.0

    def close(self) -> None:
        self._line.close()


class TaskProgress:
    """Tasks done of a known total (a plan's candidates), with a bar and an ETA: printed at
    once (plans take minutes), at each completion, and in between by a timer thread, so the
    elapsed time and the ETA keep moving while the workers run."""

    def __init__(self, total: int, label: str, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.total = total
        self.label = label
        self.enabled = enabled
        self.done = 0
        self._note = ""
        self._start = time.perf_counter()
        self._line = _Line(stream)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        if enabled:
            self._line.write(self.line(0.0), self._start)
            self._timer = threading.Thread(target=self._refresh, daemon=True)
            self._timer.start()

    def _refresh(self) -> None:
        interval = _REFRESH_S * 2 if self._line.tty else _LOG_REFRESH_S * 3
        while not self._stop.wait(interval):
            with self._lock:
                now = time.perf_counter()
                self._line.write(self.line(now - self._start, self._note), now)

    def advance(self, note: str = "") -> None:
        with self._lock:
            self.done += 1
            self._note = note
            if not self.enabled:
                return
            now = time.perf_counter()
            if self._line.tty or self._line.due(now) or self.done == self.total:
                self._line.write(self.line(now - self._start, note), now)

    def line(self, elapsed_s: float, note: str = "") -> str:
        left = eta_s(self.done, self.total, elapsed_s)
        text = (
            f"{bar(self.done / max(self.total, 1))} {self.done}/{self.total} {self.label}"
            f" | {format_duration(elapsed_s)} elapsed | ETA "
            + (format_duration(left) if left is not None else "-")
        )
        return f"{text} | {note}" if note else text

    def close(self) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.join()
        self._line.close()
