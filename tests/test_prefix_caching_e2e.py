"""Prefix caching end to end: the simulated hit rate against what the workload itself implies.

The Mooncake trace gives each request one hash id per 512-token prompt block; equal ids at
equal positions mean an equal prefix. With a KV cache too large to evict anything, what an
ideal engine can reuse for request i follows from the trace alone:

  T_i  tokens of i's prompt that an earlier request also had: over earlier requests r that
       share i's first L_r hash blocks, the largest min(512 L_r, P_r), capped at P_i (a
       shared partial last block holds only as many tokens as the shorter prompt);
  S_i  what vLLM's rules keep of T_i: whole 16-token KV blocks only, and never the prompt's
       last token (its logits are needed): 16 * min(floor(T_i / 16), floor((P_i - 1) / 16)).

The simulator must cache exactly S_i tokens for every request. Over the whole trace the three
figures are 36.64% of hash blocks seen before, T = 37.362% and S = 37.3617% of prompt tokens:
counting whole 512-token blocks overstates the tokens by partial last blocks, and vLLM's
rules lose a few tokens more.

Exactness needs every earlier request's prompt blocks published before request i looks them
up. The scheduler guarantees it: a waiting request is admitted only while token budget is
left after every running request took all it asked for, and FCFS admits in arrival order.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from sim.config.build import build_run_spec, resolved_config
from sim.config.workload_schema import workload_spec
from sim.run import simulate
from sim.workload import build_requests
from sim.workload.registry import DATASETS, traces_dir
from conftest import compose_config

QUIET = ["output.print_summary=false", "output.progress=false"]
BLOCK = 16  # KV block size (scheduler default)
TRACE_BLOCK = 512  # tokens per Mooncake hash id


def run(tmp_path: Path, overrides: list[str]):
    cfg = compose_config(overrides + QUIET)
    result = simulate(build_run_spec(cfg), tmp_path, resolved_config(cfg))
    rows = sorted(pq.read_table(tmp_path / "requests.parquet").to_pylist(), key=lambda r: r["request_id"])
    return result, rows


def mooncake(n: int) -> list[tuple[int, int, list[int]]]:
    with open(Path(traces_dir()) / DATASETS["mooncake_conversation"].relpath) as f:
        lines = [json.loads(line) for _, line in zip(range(n), f)]
    return [(d["input_length"], d["output_length"], d["hash_ids"]) for d in lines]


def implied_cached_tokens(trace: list[tuple[int, int, list[int]]]) -> list[int]:
    """S_i for each request, in trace order (see the module docstring)."""
    longest: dict[tuple[int, ...], int] = {}  # hash prefix -> longest earlier prompt having it
    out = []
    for prompt, _, hashes in trace:
        shared = 0
        for n in range(1, len(hashes) + 1):
            earlier = longest.get(tuple(hashes[:n]))
            if earlier is None:
                break
            shared = max(shared, min(TRACE_BLOCK * n, earlier))
        shared = min(shared, prompt)
        out.append(BLOCK * min(shared // BLOCK, (prompt - 1) // BLOCK))
        for n in range(1, len(hashes) + 1):
            key = tuple(hashes[:n])
            longest[key] = max(longest.get(key, 0), prompt)
    return out


def test_mooncake_hit_rate_equals_the_rate_the_trace_implies(tmp_path):
    n = 500
    trace = mooncake(n)
    expected = implied_cached_tokens(trace)
    # Enough blocks that every request could hold all its tokens at once: nothing is evicted.
    # They need a GPU of that much memory (2 MiB a block, and 32 GiB for the rest), as vLLM
    # would to allocate them.
    blocks = sum(-(-(p + o) // BLOCK) for p, o, _ in trace) + 1
    result, rows = run(tmp_path, [
        "workload=mooncake_conversation", f"workload.num_requests={n}", "model=llama3_8b",
        "hardware=h200", "scheduler.enable_prefix_caching=true",
        f"scheduler.num_gpu_blocks_override={blocks}", f"hardware.memory_gib={blocks * 2 / 1024 + 32:.0f}",
    ])
    kv = result.summary["kv_cache"]
    assert kv["evicted_blocks"] == 0
    assert [r["cached_tokens"] for r in rows] == expected
    prompt_tokens = sum(p for p, _, _ in trace)
    assert kv["prefix_cache_hit_rate"] == sum(expected) / prompt_tokens
    assert kv["prefix_cache_hits_tokens"] == sum(expected)
    assert kv["prefix_cache_queries_tokens"] == prompt_tokens
    assert 0.1 < kv["prefix_cache_hit_rate"] < 0.3  # the first 500 requests: 16.39%


def test_sessions_hit_the_previous_turns_prompt_and_answer(tmp_path):
    system = 1000
    result, rows = run(tmp_path, [
        "workload.arrival=closed_loop", "workload.concurrency=6", "workload.num_requests=150",
        "workload.turns.kind=uniform", "workload.turns.low=1", "workload.turns.high=6",
        "workload.think_time_s=3", f"workload.shared_prefix_tokens={system}",
        "workload.prompt_tokens.kind=uniform", "workload.prompt_tokens.low=1",
        "workload.prompt_tokens.high=300", "workload.output_tokens.kind=uniform",
        "workload.output_tokens.low=1", "workload.output_tokens.high=300",
        "scheduler.enable_prefix_caching=true", "scheduler.num_gpu_blocks_override=200000",
        "hardware.memory_gib=512",  # what 200,000 blocks of 2 MiB take, as in vLLM
    ])
    assert result.summary["kv_cache"]["evicted_blocks"] == 0
    sessions = defaultdict(list)
    for r in rows:
        sessions[r["session_id"]].append(r)
    first_turn_misses = 0
    for turns in sessions.values():
        turns.sort(key=lambda r: r["turn"])
        first = turns[0]
        # Turn 0: the shared system prompt's whole blocks, once any conversation has cached them.
        if first["cached_tokens"] == 0:
            first_turn_misses += 1
        else:
            assert first["cached_tokens"] == BLOCK * min(system // BLOCK, (first["prompt_tokens"] - 1) // BLOCK)
        for prev, cur in zip(turns, turns[1:]):
            # The previous turn computed the KV of all its tokens but the last one it sampled.
            written = (prev["prompt_tokens"] + prev["output_tokens"] - 1) // BLOCK
            assert cur["cached_tokens"] == BLOCK * min(written, (cur["prompt_tokens"] - 1) // BLOCK)
    assert first_turn_misses == 1  # the very first conversation admitted
    assert result.summary["kv_cache"]["prefix_cache_hit_rate"] > 0.5


def test_timeline_adds_up_to_the_run(tmp_path):
    result, rows = run(tmp_path, [
        "workload.arrival=poisson", "workload.rate=2", "workload.num_requests=150",
        "workload.turns.kind=fixed", "workload.turns.value=3", "workload.think_time_s=2",
        "workload.shared_prefix_tokens=500", "scheduler.enable_prefix_caching=true",
        "parallel.replicas=2", "output.timeline_interval_s=2.5",
    ])
    timeline = pq.read_table(tmp_path / "timeline.parquet").to_pydict()
    assert set(timeline["replica_id"]) == {0, 1}
    bins = sorted(set(timeline["t_s"]))
    assert bins == [2.5 * i for i in range(len(bins))]
    assert sum(timeline["arrivals"]) == len(rows) == 150
    assert sum(timeline["finished"]) == result.summary["requests"]["finished"]
    assert sum(timeline["admitted"]) == 150
    assert sum(timeline["output_tokens"]) == sum(r["output_tokens_generated"] for r in rows)
    assert sum(timeline["prefix_cache_hits_tokens"]) == sum(r["cached_tokens"] for r in rows)
    assert sum(timeline["prefix_cache_queries_tokens"]) == sum(r["prompt_tokens"] for r in rows)
    steps = pq.read_table(tmp_path / "steps.parquet").to_pydict()
    assert sum(timeline["busy_s"]) == pytest.approx(sum(steps["duration_s"]), rel=1e-9)
    assert sum(timeline["prefill_tokens"]) == sum(steps["num_prefill_tokens"])
    for replica in (0, 1):
        arrivals = sum(a for a, r in zip(timeline["arrivals"], timeline["replica_id"]) if r == replica)
        assert arrivals == sum(1 for r in rows if r["replica_id"] == replica)
    assert max(timeline["waiting_mean"]) >= 0 and max(timeline["running_mean"]) > 0


def test_open_loop_shared_system_prompt_hits_after_its_first_use(tmp_path):
    system, fraction = 1024, 0.5
    overrides = [f"workload.shared_prefix_tokens={system}", f"workload.shared_prefix_fraction={fraction}",
                 "workload.num_requests=200", "scheduler.enable_prefix_caching=true"]
    cfg = compose_config(overrides)
    specs = list(build_requests(workload_spec(cfg.workload), np.random.SeedSequence(cfg.seed)))
    with_prompt = [s.request_id for s in specs if s.prefix_hashes]
    assert 70 < len(with_prompt) < 130 and all(specs[i].prompt_tokens > system for i in with_prompt)
    _, rows = run(tmp_path, overrides)
    cached = {r["request_id"]: r["cached_tokens"] for r in rows}
    assert sorted(i for i, c in cached.items() if c) == with_prompt[1:]
    assert {cached[i] for i in with_prompt[1:]} == {system}
