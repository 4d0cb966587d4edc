"""A measured run, whatever file it came from: one row per request, and its latency samples.

Definitions, as in the measurement set's README and in vLLM's `vllm bench serve`:
  TTFT = first token - send; E2E = last token - send;
  TPOT = (last token - first token) / (tokens - 1), undefined for one-token outputs;
  ITL  = every gap between consecutive tokens of a request, pooled over all requests.
Throughput = output tokens (or finished requests) / (last token of any request - first send).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.errors import TraceError


@dataclass(frozen=True, slots=True)
class MeasuredRun:
    """Requests in send order. Times in seconds on the run's own clock; NaN where not measured."""

    name: str
    source: str  # the file read
    file_format: str  # jsonl | vllm-bench | csv
    send_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    ttft_s: np.ndarray
    e2e_s: np.ndarray
    tpot_s: np.ndarray
    notes: tuple[str, ...] = field(default=())
    # The client's limit on requests in flight, and whether it sent at an infinite rate, when
    # the file says (`vllm bench serve` JSON: `max_concurrency`, `request_rate`).
    max_concurrency: int | None = None
    infinite_rate: bool = False
    # Each request's gaps between consecutive tokens, in send order (empty where not measured).
    request_gaps_s: tuple[np.ndarray, ...] = ()

    @property
    def itl_s(self) -> np.ndarray:
        """Every request's gaps, pooled; empty when the file has no per-token times."""
        gaps = [g for g in self.request_gaps_s if g.size]
        return np.concatenate(gaps) if gaps else np.empty(0)

    @property
    def num_requests(self) -> int:
        return int(self.send_s.size)

    @property
    def has_latencies(self) -> bool:
        return bool(np.isfinite(self.ttft_s).any())

    @property
    def has_e2e(self) -> bool:
        return bool(np.isfinite(self.e2e_s).any())


@dataclass(slots=True)
class RunBuilder:
    """Collects requests one at a time (readers parse row by row), then sorts them by send."""

    name: str
    source: str
    file_format: str
    send: list[float] = field(default_factory=list)
    prompt: list[int] = field(default_factory=list)
    output: list[int] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    tpot: list[float] = field(default_factory=list)
    gaps: list[np.ndarray] = field(default_factory=list)  # per request, in the order added
    notes: list[str] = field(default_factory=list)
    max_concurrency: int | None = None
    infinite_rate: bool = False

    def add(
        self,
        send_s: float,
        prompt_tokens: int,
        output_tokens: int,
        *,
        ttft_s: float = float("nan"),
        e2e_s: float = float("nan"),
        tpot_s: float = float("nan"),
        itl_s: np.ndarray | None = None,
    ) -> None:
        self.send.append(send_s)
        self.prompt.append(prompt_tokens)
        self.output.append(output_tokens)
        self.ttft.append(ttft_s)
        self.e2e.append(e2e_s)
        self.tpot.append(tpot_s)
        self.gaps.append(itl_s if itl_s is not None else np.empty(0))

    def add_token_times(self, send_s: float, prompt_tokens: int, output_tokens: int, tok: np.ndarray) -> None:
        """A request whose every token arrival is known (`tok`, same clock as `send_s`)."""
        tpot = (tok[-1] - tok[0]) / (tok.size - 1) if tok.size > 1 else float("nan")
        self.add(
            send_s,
            prompt_tokens,
            output_tokens,
            ttft_s=float(tok[0] - send_s),
            e2e_s=float(tok[-1] - send_s),
            tpot_s=float(tpot),
            itl_s=np.diff(tok),
        )

    def build(self) -> MeasuredRun:
        if not self.send:
            raise TraceError(f"{self.source}: no requests in the file")
        order = np.argsort(np.asarray(self.send, dtype=np.float64), kind="stable")

        def column(values: list, dtype: type) -> np.ndarray:
            return np.asarray(values, dtype=dtype)[order]

        return MeasuredRun(
            name=self.name,
            source=self.source,
            file_format=self.file_format,
            send_s=column(self.send, np.float64),
            prompt_tokens=column(self.prompt, np.int64),
            output_tokens=column(self.output, np.int64),
            ttft_s=column(self.ttft, np.float64),
            e2e_s=column(self.e2e, np.float64),
            tpot_s=column(self.tpot, np.float64),
            notes=tuple(self.notes),
            max_concurrency=self.max_concurrency,
            infinite_rate=self.infinite_rate,
            request_gaps_s=tuple(self.gaps[i] for i in order),
        )
