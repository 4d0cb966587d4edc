"""`workload.max_concurrency`: open-loop arrivals through a client semaphore, as
`vllm bench serve --max-concurrency` sends them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from sim.config.build import build_run_spec, resolved_config
from sim.errors import ConfigError
from sim.run import simulate
from conftest import compose_config
from test_closed_loop import max_in_flight

QUIET = ["output.print_summary=false", "output.progress=false"]


def write_trace(path: Path, rows: list[tuple[float, int, int]]) -> Path:
    path.write_text("arrival_s,prompt_tokens,output_tokens\n" + "".join(f"{t},{p},{o}\n" for t, p, o in rows))
    return path


def trace_overrides(trace: Path) -> list[str]:
    return [
        "workload=azure_conv", "workload.arrival=trace", f"workload.trace={trace}", "workload.trace_format=csv",
        "workload.columns.arrival=arrival_s", "workload.columns.arrival_unit=s",
        "workload.columns.prompt_tokens=prompt_tokens", "workload.columns.output_tokens=output_tokens",
        "workload.columns.prefix_hashes=null", "workload.start_s=0", "workload.end_s=null",
    ]


def run(tmp_path: Path, overrides: list[str]) -> tuple[dict, list[dict]]:
    cfg = compose_config(["model=llama3_8b", "hardware=h100_sxm", *overrides, *QUIET])
    out = tmp_path / "out"
    result = simulate(build_run_spec(cfg), out, resolved_config(cfg))
    rows = sorted(pq.read_table(out / "requests.parquet").to_pylist(), key=lambda r: r["request_id"])
    return result.summary, rows


def test_a_limit_of_one_sends_each_request_when_the_one_before_is_answered(tmp_path):
    trace = write_trace(tmp_path / "t.csv", [(0.0, 500, 40), (0.0, 300, 60), (0.01, 800, 20), (0.02, 100, 50)])
    summary, rows = run(tmp_path, trace_overrides(trace) + ["workload.max_concurrency=1"])
    assert summary["requests"]["finished"] == 4
    assert rows[0]["arrival_s"] == 0.0
    for before, after in zip(rows, rows[1:]):  # in trace order, each at the previous answer
        assert after["arrival_s"] == before["finish_s"]
    # Latencies count from the send: the wait for the slot is not in the TTFT.
    alone, _ = run(tmp_path / "alone", trace_overrides(write_trace(tmp_path / "one.csv", [(0.0, 300, 60)])))
    assert rows[1]["ttft_s"] == pytest.approx(alone["latency_s"]["ttft"]["p50"], rel=0.5)


def test_a_request_due_after_a_slot_freed_is_sent_on_time(tmp_path):
    trace = write_trace(tmp_path / "t.csv", [(0.0, 200, 10), (30.0, 200, 10)])
    _, rows = run(tmp_path, trace_overrides(trace) + ["workload.max_concurrency=1"])
    assert rows[0]["finish_s"] < 30.0
    assert rows[1]["arrival_s"] == 30.0


def test_poisson_arrivals_never_exceed_the_limit_and_keep_their_order(tmp_path):
    base = ["workload=poisson_chat", "workload.rate=40", "workload.num_requests=300", "seed=3"]
    _, free = run(tmp_path / "free", base)
    _, limited = run(tmp_path / "limited", base + ["workload.max_concurrency=8"])
    assert max_in_flight(free) > 8  # the limit binds
    assert max_in_flight(limited) == 8
    due = np.array([r["arrival_s"] for r in free])  # the same seed draws the same arrivals
    sent = np.array([r["arrival_s"] for r in limited])
    assert np.all(sent >= due) and np.any(sent > due)
    assert np.all(np.diff(sent) >= 0)  # first come, first served
    assert [r["prompt_tokens"] for r in free] == [r["prompt_tokens"] for r in limited]


def test_a_refused_request_frees_its_slot_at_once(tmp_path):
    trace = write_trace(tmp_path / "t.csv", [(0.0, 200, 10), (0.0, 9000, 10), (0.0, 200, 10)])
    summary, rows = run(tmp_path, trace_overrides(trace) + ["workload.max_concurrency=1",
                                                            "scheduler.max_model_len=4096"])
    assert summary["requests"]["rejected"] == 1
    refused = next(r for r in rows if r["status"] == "rejected")
    assert refused["arrival_s"] == rows[0]["finish_s"]
    assert rows[2]["arrival_s"] == refused["arrival_s"]  # sent the moment the refusal came back


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["workload.max_concurrency=0"], "max_concurrency must be a whole number"),
        (["workload=closed_loop_chat", "workload.max_concurrency=4"], "set workload.concurrency"),
    ],
)
def test_a_limit_that_cannot_work_is_refused(tmp_path, overrides, message):
    cfg = compose_config(["model=llama3_8b", "hardware=h100_sxm", *overrides, *QUIET])
    with pytest.raises(ConfigError, match=message):
        build_run_spec(cfg)
