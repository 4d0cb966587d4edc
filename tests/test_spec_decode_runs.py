"""Speculative decoding end to end: refused configs, random-run invariants, byte-identical
reruns, the summary's acceptance metrics and the with/without comparison."""

from __future__ import annotations

import json
import math

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import compose_config
from sim.config.build import build_run_spec, resolved_config
from sim.errors import ConfigError, DoesNotFitError
from sim.run import simulate
from test_random_runs import QUIET, check_tables, deployments, run_random, workloads


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["speculative=eagle", "speculative.num_speculative_tokens=0"], "num_speculative_tokens=0 must be >= 1"),
        (["speculative=eagle", "speculative.acceptance_rates=[1.2,0.5,0.3]"], "outside [0, 1]"),
        (["speculative=eagle", "speculative.acceptance_rates=[0.5,0.7,0.3]"], "cannot rise"),
        (["speculative=eagle", "speculative.num_speculative_tokens=7"], "has 5 position(s)"),
        (["speculative=eagle", "speculative.model=llama3_8b"], "does not use"),
        (["speculative=ngram", "scheduler.async_scheduling=true"], "async scheduling"),
        (["speculative=mtp", "speculative.num_speculative_tokens=3", "speculative.num_draft_layers=2",
          "speculative.acceptance_rates=[0.8,0.6,0.4]"], "multiple of"),
        (["model=llama3_70b", "parallel=tp4", "speculative=draft_model", "speculative.model=llama3_405b"],
         "not smaller than the target"),
        (["model=llama3_70b", "parallel=tp4", "speculative=draft_model", "speculative.model=mistral_7b"],
         "vocabulary"),
        (["model=llama3_70b", "parallel=tp4", "speculative=draft_model",
          "speculative.draft_tensor_parallel_size=2"], "must be 1 or the target's"),
        (["speculative=draft_model", "speculative.model=nope"], "no model named 'nope'"),
        (["speculative.compare_rates=[1.0]"], "compares a speculative method with none"),
    ],
)
def test_what_cannot_work_is_refused_with_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        build_run_spec(compose_config([*overrides, *QUIET]))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_draft_model_that_does_not_fit_is_refused():
    """Llama-3.1-70B in int4 on one H100 at 55% leaves about 4 GB for the KV cache; an 8B draft
    model (5.7 GB in int4) leaves nothing."""
    base = ["model=llama3_70b", "precision=int4", "scheduler.gpu_memory_utilization=0.55", "scheduler.max_model_len=2048"]
    build_run_spec(compose_config([*base, *QUIET]))  # fits alone
    with pytest.raises(DoesNotFitError, match="does not fit beside"):
        build_run_spec(compose_config([*base, "speculative=draft_model", *QUIET]))


def test_the_drafter_takes_kv_blocks():
    plain = build_run_spec(compose_config(["+scenario=llama70b_h100", *QUIET]))
    eagle = build_run_spec(compose_config(["+scenario=llama70b_h100", "speculative=eagle", *QUIET]))
    draft = build_run_spec(compose_config(["+scenario=llama70b_h100", "speculative=draft_model", *QUIET]))
    assert draft.memory.num_gpu_blocks < eagle.memory.num_gpu_blocks < plain.memory.num_gpu_blocks
    # EAGLE's one layer of KV beside 80: about 1/81 fewer blocks, less its weights
    assert eagle.memory.num_gpu_blocks / plain.memory.num_gpu_blocks == pytest.approx(80 / 81, abs=0.02)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    deployment=deployments(), workload=workloads(), n=st.integers(0, 10**9),
    method=st.sampled_from(["eagle", "eagle3", "mtp", "ngram", "draft_model"]),
    rates=st.sampled_from([None, "[1.0,1.0,1.0,1.0,1.0]", "[0.0,0.0,0.0,0.0,0.0]", "[0.9,0.5,0.2,0.1,0.0]"]),
    k=st.integers(1, 5),
)  # fmt: skip
def test_random_speculative_runs_keep_every_invariant(tmp_path, deployment, workload, n, method, rates, k):
    deployment = {**deployment, "speculative.num_speculative_tokens": k}
    if method == "mtp":
        deployment["speculative.num_speculative_tokens"] = 1 if k > 3 else k
    if method == "ngram":
        deployment["scheduler.async_scheduling"] = False
    if method == "draft_model":
        choices = ("+scenario=llama70b_h100", "speculative=draft_model")
    else:
        choices = (f"speculative={method}",)
    if rates is not None:
        deployment["speculative.acceptance_rates"] = rates
    out = tmp_path / str(n)
    spec, result = run_random(out, choices, deployment, workload)
    assert result.complete
    check_tables(out, spec, result)
    s = result.summary["speculative"]
    k = spec.speculative.decode.num_speculative_tokens
    assert 0 <= s["num_accepted_tokens"] <= s["num_draft_tokens"] <= k * s["num_drafts"]
    if s["num_drafts"]:
        assert 1.0 <= s["mean_acceptance_length"] <= k + 1
        per_pos = s["per_position_acceptance_rate"]
        assert all(a >= b for a, b in zip(per_pos, per_pos[1:]))
        if rates == "[1.0,1.0,1.0,1.0,1.0]":
            assert s["num_accepted_tokens"] == s["num_draft_tokens"]
        if rates == "[0.0,0.0,0.0,0.0,0.0]":
            assert s["num_accepted_tokens"] == 0
    # every token delivered was one a finished request kept: ITL pairs count output - 1 each
    rows = pq.read_table(out / "requests.parquet").to_pylist()
    finished = [r for r in rows if r["status"] == "finished"]
    steps = pq.read_table(out / "steps.parquet").to_pydict()
    if not spec.enable_prefix_caching and spec.horizon_s is None and not result.summary["requests"]["preemptions"]:
        expected = sum(r["prompt_tokens"] + r["output_tokens"] - 1 for r in finished)
        assert sum(steps["num_scheduled_tokens"]) >= expected  # rejected drafts computed too


def test_same_seed_same_bytes(tmp_path):
    cfg = compose_config(["+scenario=llama70b_h100", "speculative=eagle", "workload.num_requests=60", *QUIET])
    spec = build_run_spec(cfg)
    for name in ("a", "b"):
        simulate(spec, tmp_path / name, resolved_config(cfg))
    for table in ("requests.parquet", "steps.parquet", "timeline.parquet"):
        assert (tmp_path / "a" / table).read_bytes() == (tmp_path / "b" / table).read_bytes()
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert a["speculative"] == b["speculative"]
    other = build_run_spec(compose_config(["+scenario=llama70b_h100", "speculative=eagle", "workload.num_requests=60", "seed=1", *QUIET]))
    simulate(other, tmp_path / "c", resolved_config(cfg))
    c = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert c["speculative"]["num_accepted_tokens"] != a["speculative"]["num_accepted_tokens"]


def test_summary_reports_the_acceptance_it_was_given(tmp_path):
    """Over a long run the per-position rates come back, and speculation cuts TPOT at low load."""
    base = ["+scenario=llama70b_h100", "workload.rate=1", "workload.num_requests=150", *QUIET]
    cfg = compose_config([*base, "speculative=eagle"])
    result = simulate(build_run_spec(cfg), tmp_path / "on", resolved_config(cfg))
    s = result.summary["speculative"]
    for got, want in zip(s["per_position_acceptance_rate"], [0.80, 0.608, 0.450]):
        assert got == pytest.approx(want, abs=0.02)
    assert s["acceptance_rate"] == pytest.approx(s["num_accepted_tokens"] / s["num_draft_tokens"])
    assert s["mean_acceptance_length"] == pytest.approx(1 + 0.80 + 0.608 + 0.450, abs=0.05)
    assert 0 < s["drafter_share_of_gpu_time"] < 0.1
    # chunks: the gaps above zero; the per-token ITL pools the zeros of tokens sent together
    assert s["itl_per_chunk_s"]["p50"] > result.summary["latency_s"]["itl"]["p50"]
    cfg_off = compose_config(base)
    off = simulate(build_run_spec(cfg_off), tmp_path / "off", resolved_config(cfg_off))
    assert "speculative" not in off.summary
    assert result.summary["latency_s"]["tpot"]["p50"] < 0.6 * off.summary["latency_s"]["tpot"]["p50"]
    rows = pq.read_table(tmp_path / "on" / "requests.parquet").to_pylist()
    assert all(r["output_tokens_generated"] == r["output_tokens"] for r in rows)


def test_the_comparison_answers(tmp_path):
    cfg = compose_config([
        "model=llama3_8b", "speculative=eagle", "speculative.compare_rates=[1,40]",
        "workload.num_requests=60", *QUIET,
    ])  # fmt: skip
    result = simulate(build_run_spec(cfg), tmp_path, resolved_config(cfg))
    comparison = result.summary["speculative_comparison"]
    low, high = comparison["rows"]
    assert low["tpot_p50_speedup"] > high["tpot_p50_speedup"]
    assert high["on"]["mean_batch"] > low["on"]["mean_batch"]
    assert comparison["answer"].startswith("eagle (k=3) cuts median TPOT")
    assert (tmp_path / "compare" / "rate=1,speculative=off" / "requests.parquet").exists()
    assert math.isfinite(low["off"]["tpot_p50_s"])
