"""A progress line on stderr for runs that last more than a few seconds of wall time."""

from __future__ import annotations

import sys
import time

_SHOW_AFTER_S = 2.0  # runs shorter than this print nothing
_REFRESH_S = 0.5
_CHECK_EVERY_STEPS = 256  # reading the clock every step would cost more than the step


class Progress:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._start = time.perf_counter()
        self._last_print = 0.0
        self._calls = 0
        self._printed = False
        self._tty = sys.stderr.isatty()

    def tick(self, sim_time_s: float, num_finished: int) -> None:
        self._calls += 1
        if not self.enabled or self._calls % _CHECK_EVERY_STEPS:
            return
        now = time.perf_counter()
        elapsed = now - self._start
        # Off a terminal (CI, logs) one line every 10 s is enough.
        refresh = _REFRESH_S if self._tty else 10.0
        if elapsed < _SHOW_AFTER_S or now - self._last_print < refresh:
            return
        self._last_print = now
        line = (
            f"[sim] {sim_time_s:,.1f} s simulated | {num_finished:,} requests finished"
            f" | {self._calls:,} steps | {elapsed:,.1f} s wall"
        )
        if self._tty:
            sys.stderr.write("\r" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
        self._printed = True

    def close(self) -> None:
        if self._printed and self._tty:
            sys.stderr.write("\n")
            sys.stderr.flush()
