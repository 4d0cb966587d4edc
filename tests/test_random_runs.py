"""Invariants under random load: random small deployments and workloads, run end to end
(compose -> build_run_spec -> simulate -> Parquet), checked from the tables they write.

Caches are small (num_gpu_blocks_override) so preemption, rejection for size, the queue limit
and the horizon all happen. Every engine step is also checked in-engine: the scheduler's
`schedule` is wrapped so the token budget, max_num_seqs and free + used KV blocks = total are
asserted after each step, not only at the end of the run.
"""

from __future__ import annotations

import copy
import functools
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sim.config.build import build_run_spec, resolved_config
from sim.core.scheduler import Scheduler
from sim.run import simulate
from conftest import compose_config

QUIET = ["output.print_summary=false", "output.progress=false"]
BASES = ((), ("model=mixtral_8x7b", "parallel=tp2"), ("+scenario=llama70b_h100",))


@functools.lru_cache(maxsize=None)
def _base(choices: tuple[str, ...]):
    return compose_config([*choices, *QUIET])


def compose(choices: tuple[str, ...], overrides: list[str]):
    """What `compose_config([*choices, *overrides])` gives, without a full composition."""
    cfg = copy.deepcopy(_base(choices))
    ConfigLoaderImpl._apply_overrides_to_config(OverridesParser.create().parse_overrides(overrides), cfg)
    return cfg


@st.composite
def deployments(draw):
    block_size = draw(st.sampled_from([4, 8, 16, 32]))
    max_model_len = draw(st.integers(128, 1024))
    budget = draw(st.integers(16, 1024))
    chunked = draw(st.booleans())
    if not chunked:
        budget = max(budget, max_model_len)  # vLLM refuses less: a long prompt could never run
    min_blocks = math.ceil(max_model_len / block_size)
    # KV offloading (sim.kv_offload): host tiers small enough to evict, and a disk behind.
    offload = draw(st.sampled_from(["none", "none", "cpu", "cpu_disk"]))
    tiers = {} if offload == "none" else {
        "kv_offload.cpu_size_gib": draw(st.sampled_from([0.05, 0.5, 4.0])),
        "kv_offload.cross_layer_blocks": draw(st.booleans()),
        "kv_offload.eviction_policy": draw(st.sampled_from(["lru", "arc"])),
    }
    if offload == "cpu_disk":
        tiers["kv_offload.disk_size_gib"] = draw(st.sampled_from([0.1, 1.0]))
    return {
        "kv_offload": offload,
        **tiers,
        "scheduler.block_size": block_size,
        "scheduler.max_model_len": max_model_len,
        "scheduler.max_num_batched_tokens": budget,
        "scheduler.enable_chunked_prefill": chunked,
        "scheduler.max_num_seqs": draw(st.integers(1, 16)),
        "scheduler.num_gpu_blocks_override": min_blocks + draw(st.integers(0, min_blocks)),
        "scheduler.long_prefill_token_threshold": draw(st.sampled_from([0, 0, 17, 256])),
        "scheduler.enable_prefix_caching": offload != "none" or draw(st.booleans()),
        "scheduler.max_waiting_requests": draw(st.sampled_from(["null", "null", 1, 3, 8])),
        "parallel.replicas": draw(st.integers(1, 3)),
        "parallel.router": draw(st.sampled_from(["round_robin", "least_outstanding"])),
        "horizon_s": draw(st.sampled_from(["null", "null", 0.02, 0.3, 3.0])),
        "seed": draw(st.integers(0, 2**32)),
        "output.write_steps": True,
    }


@st.composite
def workloads(draw):
    arrival = draw(st.sampled_from(["poisson", "constant", "gamma", "offline", "trace", "closed_loop"]))
    n = draw(st.integers(1, 30))
    if arrival == "trace":
        name = draw(st.sampled_from(["azure_conv", "mooncake_conversation"]))
        return {"workload": name, "workload.num_requests": n, "workload.speedup": 50.0}
    low_p = draw(st.integers(1, 300))
    low_o = draw(st.integers(1, 80))
    # Users that wait for answers (sim.clients): closed loops, multi-turn sessions with a
    # shared system prompt; every turn is a request of its own in the tables.
    clients = {
        "workload.concurrency": draw(st.integers(1, 8)),
        "workload.think_time_s": draw(st.sampled_from([0.0, 0.05, 0.5])),
        "workload.think_time_kind": draw(st.sampled_from(["fixed", "exponential"])),
        "workload.turns.kind": "uniform", "workload.turns.low": 1,
        "workload.turns.high": draw(st.integers(1, 4)),
        "workload.shared_prefix_tokens": draw(st.sampled_from([0, 64])),
    } if arrival == "closed_loop" or draw(st.booleans()) else {}
    return {
        **clients,
        "workload.arrival": arrival,
        "workload.num_requests": n,
        "workload.rate": draw(st.floats(1.0, 500.0)),
        "workload.cv": 2.0,
        "workload.prompt_tokens.kind": "uniform",
        "workload.prompt_tokens.low": low_p,
        "workload.prompt_tokens.high": low_p + draw(st.integers(0, 400)),
        "workload.output_tokens.kind": "uniform",
        "workload.output_tokens.low": low_o,
        "workload.output_tokens.high": low_o + draw(st.integers(0, 120)),
    }


def _checked_schedule(original):
    """Scheduler.schedule, plus the step invariants asserted right after it."""

    def schedule(self: Scheduler, now: float):
        output = original(self, now)
        cfg = self.config
        assert sum(output.num_scheduled_tokens) <= cfg.max_num_batched_tokens
        assert len(self.running) <= cfg.max_num_seqs
        assert output.batch.num_tokens == sum(output.num_scheduled_tokens)
        self.kv_cache_manager.block_pool.check_invariants()
        if hasattr(self.connector, "check_invariants"):  # KV blocks conserved across the offload tiers
            self.connector.check_invariants()
        return output

    return schedule


def run_random(tmp_path: Path, choices, deployment: dict, workload: dict):
    group = (f"workload={workload['workload']}",) if "workload" in workload else ()
    group += (f"kv_offload={deployment.get('kv_offload', 'none')}",)
    items = {**{k: v for k, v in deployment.items() if k != "kv_offload"},
             **{k: v for k, v in workload.items() if k != "workload"}}  # fmt: skip
    cfg = compose((*choices, *group), [f"{k}={v}" for k, v in items.items()])
    spec = build_run_spec(cfg)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Scheduler, "schedule", _checked_schedule(Scheduler.schedule))
        result = simulate(spec, tmp_path, resolved_config(cfg))
    return spec, result


def check_tables(tmp_path: Path, spec, result, pd: bool = False) -> None:
    counts = result.summary["requests"]
    rows = pq.read_table(tmp_path / "requests.parquet").to_pylist()
    steps = pq.read_table(tmp_path / "steps.parquet").to_pydict()
    horizon = spec.horizon_s if spec.horizon_s is not None else math.inf
    limit = spec.scheduler.max_model_len

    # Every request that arrived ends finished, rejected or unfinished, and the summary agrees.
    by_status = {s: [r for r in rows if r["status"] == s] for s in ("finished", "rejected", "unfinished")}
    assert sum(map(len, by_status.values())) == len(rows) == counts["arrived"]
    assert len({r["request_id"] for r in rows}) == len(rows)
    for status, group in by_status.items():
        assert counts[status] == len(group), status
    if spec.horizon_s is None:
        assert not by_status["unfinished"]
    assert counts["preemptions"] == sum(r["preemptions"] for r in rows)

    for r in by_status["finished"]:
        assert r["output_tokens_generated"] == r["output_tokens"]
        assert r["arrival_s"] <= r["first_scheduled_s"] <= r["first_token_s"] <= r["finish_s"] <= horizon
        assert 0 <= r["ttft_s"] <= r["e2e_s"]
        assert r["prompt_tokens"] + r["output_tokens"] <= limit
    for r in by_status["rejected"]:
        assert r["reject_reason"]
        assert math.isnan(r["first_scheduled_s"]) and r["output_tokens_generated"] == 0
        too_long = r["prompt_tokens"] + r["output_tokens"] > limit
        queue_full = r["reject_reason"].startswith("queue full")
        assert too_long or queue_full or "KV blocks" in r["reject_reason"], r["reject_reason"]
        assert not queue_full or spec.max_waiting_requests is not None
    for r in by_status["unfinished"]:
        assert r["arrival_s"] <= horizon
        assert r["output_tokens_generated"] < r["output_tokens"]
        if not math.isnan(r["first_token_s"]):
            assert r["arrival_s"] <= r["first_scheduled_s"] <= r["first_token_s"] <= horizon

    # Steps: per replica, in order, never overlapping, within the budget and max_num_seqs.
    replica = np.asarray(steps["replica_id"])
    start = np.asarray(steps["start_s"])
    end = start + np.asarray(steps["duration_s"])
    assert np.all(np.asarray(steps["num_scheduled_tokens"]) <= spec.scheduler.max_num_batched_tokens)
    assert np.all(np.asarray(steps["num_scheduled_tokens"]) >= 1)
    assert np.all(np.asarray(steps["num_running"]) <= spec.scheduler.max_num_seqs)
    assert np.all(np.asarray(steps["kv_blocks_used"]) <= spec.memory.num_engine_blocks)
    assert np.all(end <= horizon)
    for rid in np.unique(replica):
        mine = replica == rid
        assert np.all(np.diff(start[mine]) >= 0)
        if spec.parallel.pp == 1:  # pipeline stages overlap consecutive steps by design
            assert np.all(start[mine][1:] >= end[mine][:-1] - 1e-12)
        else:
            assert np.all(end[mine][1:] >= end[mine][:-1] - 1e-12)  # steps leave in order
        assert list(np.asarray(steps["step"])[mine]) == list(range(int(mine.sum())))

    # Offload tiers: what a tier holds is what was stored minus what it evicted, within its
    # size; the disk holds only host evictions; a hit is a block that was looked up.
    offload = result.summary.get("kv_offload")
    if offload is not None:
        for name, tier in offload["tiers"].items():
            size = offload["spec"]["tiers"][name]["num_blocks"] * spec.num_replicas
            assert tier["stored_blocks"] - tier["evicted_blocks"] == tier["resident_blocks_at_end"] <= size
            assert tier["hit_blocks"] <= tier["lookup_blocks"]
        if "disk" in offload["tiers"]:
            assert offload["tiers"]["disk"]["stored_blocks"] <= offload["tiers"]["cpu"]["evicted_blocks"]
        hits = sum(t["hit_blocks"] for t in offload["tiers"].values())
        assert offload["links"]["host_to_gpu"]["bytes"] == hits * spec.kv_offload.block_bytes

    # Without preemption, prefix caching, a horizon or speculative decoding (which also computes
    # the drafts it rejects), each finished request's tokens were computed exactly once: its
    # prompt and every output token but the last.
    # (P/D: the decode instance recomputes the prompt's last token, one more per request; a
    # rejected request's prompt may have been computed by the prefill instance.)
    plain = spec.speculative is None
    if plain and not spec.enable_prefix_caching and spec.horizon_s is None and counts["preemptions"] == 0:
        expected = sum(r["prompt_tokens"] + r["output_tokens"] - 1 + pd for r in by_status["finished"])
        if not (pd and counts["rejected"]):
            assert sum(steps["num_scheduled_tokens"]) == expected


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(choices=st.sampled_from(BASES), deployment=deployments(), workload=workloads(), n=st.integers(0, 10**9))
def test_random_runs_keep_every_invariant(tmp_path, choices, deployment, workload, n):
    out = tmp_path / str(n)
    spec, result = run_random(out, choices, deployment, workload)
    assert result.complete
    check_tables(out, spec, result)
    counts = result.summary["requests"]
    for outcome in ("rejected", "unfinished", "preemptions"):  # --hypothesis-show-statistics
        event(f"{outcome}: {'some' if counts[outcome] else 'none'}")
    if "kv_offload" in result.summary:
        event(f"offload hits: {'some' if result.summary['kv_offload']['loads'] else 'none'}")


def test_a_tight_cache_preempts_and_still_accounts_for_everything(tmp_path):
    """A fixed case that surely preempts, so the preemption paths are always exercised."""
    deployment = {
        "scheduler.block_size": 16, "scheduler.max_model_len": 512,
        "scheduler.num_gpu_blocks_override": 40, "scheduler.max_num_seqs": 16,
        "scheduler.max_num_batched_tokens": 256, "seed": 3, "output.write_steps": True,
    }
    workload = {
        "workload.arrival": "offline", "workload.num_requests": 24,
        "workload.prompt_tokens.kind": "fixed", "workload.prompt_tokens.value": 100,
        "workload.output_tokens.kind": "fixed", "workload.output_tokens.value": 200,
    }
    spec, result = run_random(tmp_path, (), deployment, workload)
    assert result.summary["requests"]["preemptions"] > 0
    assert result.summary["requests"]["finished"] == 24
    check_tables(tmp_path, spec, result)


def test_a_request_admitted_by_chunks_gets_the_blocks_of_loaded_requests_behind_it(tmp_path):
    """Found by the random runs: 16 usable blocks, three requests waiting behind the head with
    their host-tier loads landed hold 14 of them. The head is admitted 17 tokens at a time
    (long_prefill_token_threshold) but can never reach its 7 blocks, so it preempted itself at
    every step, forever. Alone in the running list, it must take the loaded requests' blocks,
    as an unadmittable head does. The horizon bounds the run that would never end."""
    deployment = {
        "kv_offload": "cpu_disk", "kv_offload.cpu_size_gib": 0.5, "kv_offload.disk_size_gib": 1.0,
        "scheduler.block_size": 32, "scheduler.max_model_len": 340,
        "scheduler.max_num_batched_tokens": 1000, "scheduler.max_num_seqs": 14,
        "scheduler.num_gpu_blocks_override": 17, "scheduler.long_prefill_token_threshold": 17,
        "scheduler.enable_prefix_caching": True, "scheduler.max_waiting_requests": 3,
        "horizon_s": 60, "seed": 336481, "output.write_steps": True,
    }  # fmt: skip
    workload = {
        "workload.arrival": "poisson", "workload.num_requests": 28, "workload.rate": 199.09634398858856,
        "workload.cv": 2.0, "workload.prompt_tokens.kind": "uniform", "workload.prompt_tokens.low": 84,
        "workload.prompt_tokens.high": 416, "workload.output_tokens.kind": "uniform",
        "workload.output_tokens.low": 47, "workload.output_tokens.high": 57,
    }  # fmt: skip
    spec, result = run_random(tmp_path, (), deployment, workload)
    counts = result.summary["requests"]
    assert counts["unfinished"] == 0 and counts["finished"] + counts["rejected"] == 28
    assert counts["preemptions"] > 0 and result.summary["kv_offload"]["loads"] > 0
    check_tables(tmp_path, spec, result)


@pytest.mark.parametrize("offload,policy", [("cpu", "lru"), ("cpu_disk", "lru"), ("cpu_disk", "arc")])
def test_a_tight_cache_with_offload_reloads_and_conserves_blocks_across_tiers(tmp_path, offload, policy):
    """Preempted requests and later turns find their blocks on the host (or disk): loads
    happen, every request finishes, and the tiers' counts balance (check_tables)."""
    deployment = {
        "kv_offload": offload, "kv_offload.cpu_size_gib": 0.02, "kv_offload.disk_size_gib": 0.5,
        "kv_offload.eviction_policy": policy,
        "scheduler.block_size": 16, "scheduler.max_model_len": 1024,
        "scheduler.num_gpu_blocks_override": 70, "scheduler.max_num_seqs": 16,
        "scheduler.max_num_batched_tokens": 256, "seed": 3, "output.write_steps": True,
    }  # fmt: skip
    if offload == "cpu":
        del deployment["kv_offload.disk_size_gib"]
    workload = {
        "workload.arrival": "poisson", "workload.rate": 40.0, "workload.num_requests": 60,
        "workload.turns.kind": "uniform", "workload.turns.low": 2, "workload.turns.high": 4,
        "workload.think_time_s": 0.5,
        "workload.prompt_tokens.kind": "fixed", "workload.prompt_tokens.value": 100,
        "workload.output_tokens.kind": "fixed", "workload.output_tokens.value": 60,
    }  # fmt: skip
    spec, result = run_random(tmp_path, (), deployment, workload)
    offload_summary = result.summary["kv_offload"]
    assert result.summary["requests"]["finished"] == 60
    assert offload_summary["loads"] > 0 and offload_summary["tiers"]["cpu"]["evicted_blocks"] > 0
    if offload == "cpu_disk":
        assert offload_summary["tiers"]["disk"]["stored_blocks"] > 0
    check_tables(tmp_path, spec, result)


@st.composite
def pools(draw):
    """A random P/D split or mixed pool of the base GPU (same batch limits as the run)."""
    if draw(st.booleans()):
        items = [
            f"+deployment.pools.p={{role:prefill,replicas:{draw(st.integers(1, 2))},tp:1}}",
            f"+deployment.pools.d={{role:decode,replicas:{draw(st.integers(1, 3))},tp:1}}",
            f"deployment.prefill_router={draw(st.sampled_from(['round_robin', 'least_outstanding', 'cache_aware']))}",
            f"deployment.decode_router={draw(st.sampled_from(['round_robin', 'least_outstanding', 'kv_free']))}",
        ]
        return "pd", items
    items = [
        f"+deployment.pools.a={{replicas:{draw(st.integers(1, 2))},tp:1}}",
        f"+deployment.pools.b={{replicas:{draw(st.integers(1, 2))},tp:1,precision:fp8}}",
        f"deployment.router={draw(st.sampled_from(['round_robin', 'weighted_round_robin', 'least_outstanding', 'cache_aware']))}",
        f"deployment.cache_aware.lag_s={draw(st.sampled_from([0.0, 0.05]))}",
    ]
    return "mixed", items


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(deployment=deployments(), pool=pools(), workload=workloads(), n=st.integers(0, 10**9))
def test_random_multi_pool_runs_keep_every_invariant(tmp_path, deployment, pool, workload, n):
    """P/D and mixed pools: every request finishes, is rejected or is still in flight, once; KV
    blocks are conserved in every replica of every pool (run.py asserts acquired == released
    when nothing is left holding blocks); with P/D, each finished request's prompt is computed
    once by a prefill instance and its last prompt token once more by its decode instance."""
    kind, items = pool
    out = tmp_path / str(n)
    # Pools are TP groups without a host tier (sim.config.build refuses both with pools).
    deployment = {k: v for k, v in deployment.items() if not k.startswith(("parallel.", "kv_offload"))}
    group = (f"workload={workload['workload']}",) if "workload" in workload else ()
    values = {**deployment, **{k: v for k, v in workload.items() if k != "workload"}}
    cfg = compose(group, [*items, *(f"{k}={v}" for k, v in values.items())])
    spec = build_run_spec(cfg)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Scheduler, "schedule", _checked_schedule(Scheduler.schedule))
        result = simulate(spec, out, resolved_config(cfg))
    assert result.complete
    check_tables(out, spec, result, pd=kind == "pd")
    event(f"{kind}: rejected {'some' if result.summary['requests']['rejected'] else 'none'}")
