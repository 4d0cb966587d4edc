"""The workload entry point: a config and a seed in, RequestSpecs in arrival order out.

Everything that can fail (config validation, reading a trace or a length dataset) happens
when `build_requests` is called, not on the first `next()`, so a bad config fails before the
simulation starts. Requests are drawn in NumPy chunks and yielded one by one, so a
duration-bound workload at a huge rate never holds all its requests in memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from sim.errors import ConfigError
from sim.workload.arrivals import CHUNK, ArrivalProcess, OfflineArrivals, RenewalArrivals, bounded_chunks
from sim.workload.spec import WorkloadSpec
from sim.workload.empirical import EmpiricalLengths
from sim.workload.lengths import make_length_sampler
from sim.workload.rate_schedule import schedule_process
from sim.workload.registry import resolve
from sim.workload.replay import replay_times
from sim.workload.request_spec import MAX_ARRIVAL_S, RequestSpec
from sim.workload.sessions import SYSTEM_PROMPT_SEGMENT, LengthPairs, SessionSource, session_start_times
from sim.workload.trace_readers import load_table
from sim.workload.validate import RENEWAL_KINDS, drives_clients, validate

log = logging.getLogger(__name__)

# Appending a stream keeps the earlier ones (child i of the seed is stream i).
STREAMS = (
    "arrivals", "prompt_tokens", "output_tokens", "arrival_thinning", "turns", "shared_prefix", "think_time",
)


@dataclass(frozen=True, slots=True)
class RequestChunk:
    """Columns of consecutive requests; prefix/line fields empty for synthetic requests."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    prefix_hashes: Sequence[tuple[int, ...]] | None = None
    prefix_block_tokens: int = 0
    source_lines: np.ndarray | None = None


def build_requests(
    wc: WorkloadSpec,
    seed: np.random.SeedSequence,
    *,
    max_model_len: int | None = None,
) -> Iterator[RequestSpec]:
    """Requests of the workload `wc`, in non-decreasing arrival_s, request_id 0, 1, 2, ...

    The same seed gives the same requests. Requests longer than `max_model_len` (prompt +
    output) are yielded anyway: the engine rejects and counts them, as vLLM would, and a
    warning is logged for the first one so a misfit workload is noticed.
    """
    validate(wc)
    if drives_clients(wc):
        raise ConfigError(
            f"workload {wc.name}: closed-loop and multi-turn requests depend on the engine's answers, "
            "so they cannot be listed in advance; use build_workload (sessions for sim.clients)"
        )
    rngs = spawn_streams(seed)
    if wc.arrival == "trace":
        chunks = _trace_chunks(wc)
    else:
        chunks = _synthetic_chunks(wc, rngs)
    return _emit(chunks, max_model_len, describe(wc))


def build_workload(
    wc: WorkloadSpec,
    seed: np.random.SeedSequence,
    *,
    max_model_len: int | None = None,
    block_size: int | None = None,
) -> Iterator[RequestSpec] | SessionSource:
    """What the simulator runs: timed requests (open loop), or sessions for SimPy clients
    (closed loop, multi-turn sessions), whose requests depend on the engine's answers.

    `block_size` is the engine's KV block size when prefix caching is on (sessions then give
    their turns KV block identities), None otherwise.
    """
    validate(wc)
    if not drives_clients(wc):
        return build_requests(wc, seed, max_model_len=max_model_len)
    rngs = spawn_streams(seed)
    start_times = None
    if wc.arrival != "closed_loop":
        start_times = session_start_times(_arrival_process(wc, rngs), wc.duration_s)
    return SessionSource(wc, rngs, _length_pairs(wc, rngs), start_times, block_size)


def spawn_streams(seed: np.random.SeedSequence | int) -> dict[str, np.random.Generator]:
    """One Generator per named stream, children 0..3 of `seed`.

    The children equal what `seed.spawn(4)` returns on a fresh SeedSequence, but are derived
    without mutating the caller's object, so calling twice with one seed repeats the requests.
    """
    if not isinstance(seed, np.random.SeedSequence):
        seed = np.random.SeedSequence(seed)
    return {
        name: np.random.default_rng(
            np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, i), pool_size=seed.pool_size)
        )
        for i, name in enumerate(STREAMS)
    }


def _arrival_process(wc: WorkloadSpec, rngs: dict[str, np.random.Generator]) -> ArrivalProcess:
    if wc.arrival in RENEWAL_KINDS:
        return RenewalArrivals(wc.arrival, wc.rate, rngs["arrivals"], wc.cv)
    if wc.arrival == "offline":
        return OfflineArrivals()
    return schedule_process(
        wc.arrival,
        rate=wc.rate,
        schedule=wc.schedule,
        amplitude=wc.amplitude,
        period_s=wc.period_s,
        phase_s=wc.phase_s,
        rng=rngs["arrivals"],
        accept_rng=rngs["arrival_thinning"],
    )


def _synthetic_chunks(wc: WorkloadSpec, rngs: dict[str, np.random.Generator]) -> Iterator[RequestChunk]:
    """Set up eagerly (so a bad lengths file fails now), then generate lazily."""
    process = _arrival_process(wc, rngs)
    lengths = _length_pairs(wc, rngs)
    system = wc.shared_prefix_tokens
    prefix_rng = rngs["shared_prefix"]

    def generate() -> Iterator[RequestChunk]:
        for times in bounded_chunks(process, wc.num_requests, wc.duration_s):
            p, o = lengths(len(times))
            if not system:
                yield RequestChunk(times, p, o)
                continue
            # A shared system prompt in front of a fraction of the prompts: one prefix block
            # of `system` tokens, the same identity for every request that has it.
            has = prefix_rng.random(len(times)) < wc.shared_prefix_fraction
            hashes = [(SYSTEM_PROMPT_SEGMENT,) if h else () for h in has.tolist()]
            yield RequestChunk(times, p + system * has, o, hashes, system)

    return generate()


def _length_pairs(wc: WorkloadSpec, rngs: dict[str, np.random.Generator]) -> LengthPairs:
    """(prompt, output) length draws: two parametric laws, or rows of a dataset."""
    prompt_rng, output_rng = rngs["prompt_tokens"], rngs["output_tokens"]
    if wc.lengths_from is not None:
        src = resolve(wc.lengths_from, wc.trace_format, wc.columns, "workload.lengths_from")
        empirical = EmpiricalLengths(load_table(src.path, src.format.reader, src.format.columns, with_arrival=False))
        return lambda n: empirical.sample(prompt_rng, n)  # one row draw gives both lengths
    prompt = make_length_sampler(wc.prompt_tokens)
    output = make_length_sampler(wc.output_tokens)
    return lambda n: (prompt(prompt_rng, n), output(output_rng, n))


def _trace_chunks(wc: WorkloadSpec) -> Iterator[RequestChunk]:
    """Load and transform the whole trace now (traces are small); slice it lazily."""
    assert wc.trace is not None
    src = resolve(wc.trace, wc.trace_format, wc.columns, "workload.trace")
    if not src.has_arrivals:
        raise ConfigError(
            f"workload.trace: {wc.trace!r} has no arrival times (lengths only); "
            f"use lengths_from: {wc.trace} with a synthetic arrival process instead"
        )
    table = load_table(src.path, src.format.reader, src.format.columns)
    assert table.arrival_s is not None
    rows, times = replay_times(table.arrival_s, wc)
    if len(times) and times[-1] > MAX_ARRIVAL_S:
        raise ConfigError(
            f"workload.trace: the replay ends at {times[-1]:g} s, past 2**32 s (136 years) of "
            "simulated time, where float64 seconds no longer resolve an engine step; check "
            "workload.columns.arrival_unit, speedup or target_rate"
        )

    def generate() -> Iterator[RequestChunk]:
        for lo in range(0, len(rows), CHUNK):
            sel = rows[lo : lo + CHUNK]
            hashes = None
            if table.prefix_hashes is not None:
                hashes = [table.prefix_hashes[i] for i in sel.tolist()]
            yield RequestChunk(
                arrival_s=times[lo : lo + CHUNK],
                prompt_tokens=table.prompt_tokens[sel],
                output_tokens=table.output_tokens[sel],
                prefix_hashes=hashes,
                prefix_block_tokens=table.prefix_block_tokens,
                source_lines=table.lines[sel],
            )

    return generate()


def describe(wc: WorkloadSpec) -> str:
    """How messages name the workload: a replay by its trace (the group's name, often the
    default `poisson_chat` under a `workload.trace=...` override, would mislead)."""
    if wc.arrival == "trace":
        return f"trace {wc.trace}"
    return f"workload {wc.name}"


def _emit(chunks: Iterator[RequestChunk], max_model_len: int | None, name: str) -> Iterator[RequestSpec]:
    """Number the requests and wrap each row in a RequestSpec."""
    request_id = 0
    warned = False
    for c in chunks:
        if max_model_len is not None and not warned:
            too_long = np.flatnonzero(c.prompt_tokens + c.output_tokens > max_model_len)
            if len(too_long):
                warned = True
                log.warning(
                    "%s: request %d needs %d tokens, more than max_model_len=%d; such requests "
                    "are passed on and the engine rejects them (further ones are not logged)",
                    name, request_id + int(too_long[0]),
                    int(c.prompt_tokens[too_long[0]] + c.output_tokens[too_long[0]]), max_model_len,
                )
        columns = (c.arrival_s.tolist(), c.prompt_tokens.tolist(), c.output_tokens.tolist())
        if c.source_lines is None and c.prefix_hashes is None:
            for rid, (a, p, o) in enumerate(zip(*columns), start=request_id):
                yield RequestSpec(rid, a, p, o)
        else:
            hashes = c.prefix_hashes if c.prefix_hashes is not None else [()] * len(columns[0])
            lines = c.source_lines.tolist() if c.source_lines is not None else [0] * len(columns[0])
            block = c.prefix_block_tokens
            for rid, (a, p, o, h, line) in enumerate(zip(*columns, hashes, lines), start=request_id):
                yield RequestSpec(rid, a, p, o, h, block, line)
        request_id += len(columns[0])
