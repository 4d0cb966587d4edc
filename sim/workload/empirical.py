"""Empirical (prompt, output) lengths: resample the rows of a real dataset jointly.

Drawing the pair from one row keeps the correlation between prompt and output lengths that
two independent fitted laws would lose (a long document to summarise gets a long summary).
"""

from __future__ import annotations

import numpy as np

from sim.workload.trace_table import TraceTable


class EmpiricalLengths:
    """Uniform resampling, with replacement, of a table's (prompt, output) rows."""

    def __init__(self, table: TraceTable):
        self._prompt = table.prompt_tokens
        self._output = table.output_tokens

    def __len__(self) -> int:
        return len(self._prompt)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """`n` row draws from one stream: (prompt_tokens, output_tokens) int64 arrays."""
        rows = rng.integers(0, len(self._prompt), size=n)
        return self._prompt[rows], self._output[rows]
