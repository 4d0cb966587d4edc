"""sim.replay readers and metrics: each input format on small hand-made files, the metric
definitions checked by hand, and malformed inputs refused with a clean TraceError."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from sim.errors import ConfigError, SimError, TraceError
from sim.replay import locate, read_meta, read_run
from sim.replay.compare import compare, distribution
from sim.replay.readers import detect_format
from sim.replay.settings import EngineSettings, hardware_name, _model_name, to_overrides
from sim.replay.simulate import measured_side

DATA = Path(__file__).parent / "data" / "vllm"

# Two requests, written out of send order. By hand:
#   r0: send 0.0, tok 0.1 0.3 0.4 -> TTFT 0.1, E2E 0.4, TPOT (0.4-0.1)/2 = 0.15, gaps 0.2 0.1
#   r1: send 0.5, tok 0.7 1.0     -> TTFT 0.2, E2E 0.5, TPOT 0.3,                gap  0.3
#   5 output tokens and 2 requests over first send (0.0) to last token (1.0): 5 tok/s, 2 req/s
ROWS = [
    {"send": 0.5, "prompt": 20, "output": 2, "tok": [0.7, 1.0]},
    {"send": 0.0, "prompt": 10, "output": 3, "tok": [0.1, 0.3, 0.4]},
]


def write_jsonl(path: Path, rows: list, gz: bool = False) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def check_hand_run(run, *, itl: bool = True) -> None:
    assert run.send_s.tolist() == pytest.approx([0.0, 0.5])
    assert run.prompt_tokens.tolist() == [10, 20]
    assert run.output_tokens.tolist() == [3, 2]
    assert run.ttft_s == pytest.approx([0.1, 0.2])
    assert run.e2e_s == pytest.approx([0.4, 0.5])
    assert run.tpot_s == pytest.approx([0.15, 0.3])
    side = measured_side(run)
    assert side.output_tokens_per_s == pytest.approx(5.0)
    assert side.requests_per_s == pytest.approx(2.0)
    assert side.latency["ttft"]["mean"] == pytest.approx(0.15)
    assert side.latency["ttft"]["p50"] == pytest.approx(0.15)
    assert side.latency["tpot"]["mean"] == pytest.approx(0.225)
    if itl:
        assert sorted(run.itl_s.tolist()) == pytest.approx([0.1, 0.2, 0.3])
        assert side.latency["itl"]["mean"] == pytest.approx(0.2)
        assert side.latency["itl"]["p50"] == pytest.approx(0.2)
        assert side.latency["itl"]["p99"] == pytest.approx(0.298)  # linear: 0.2 + 0.98 * 0.1


def test_jsonl_metrics_by_hand(tmp_path):
    run = read_run(write_jsonl(tmp_path / "requests_tiny.jsonl", ROWS))
    assert run.name == "tiny" and run.file_format == "jsonl"
    check_hand_run(run)


def test_jsonl_gz_and_format_detection(tmp_path):
    path = write_jsonl(tmp_path / "requests_tiny.jsonl.gz", ROWS, gz=True)
    assert detect_format(path) == "jsonl"
    check_hand_run(read_run(path))
    assert detect_format(Path("x.json")) == "vllm-bench"
    assert detect_format(Path("x.csv.gz")) == "csv"


def bench_doc() -> dict:
    """What `vllm bench serve --save-result --save-detailed` writes (vllm/benchmarks/serve.py):
    perf_counter start times, per-request gaps, and a failed request with an error."""
    return {
        "duration": 1.2,
        "completed": 2,
        "failed": 1,
        "start_times": [100.0, 100.2, 100.5],
        "input_lens": [10, 5, 20],
        "output_lens": [3, 0, 2],
        "ttfts": [0.1, 0.0, 0.2],
        "itls": [[0.2, 0.1], [], [0.3]],
        "latencies": [0.4, 0.0, 0.5],
        "errors": ["", "TimeoutError", ""],
        "generated_texts": ["", "", ""],
    }


def test_vllm_bench_json(tmp_path):
    path = tmp_path / "openai-infqps-Llama-3.1-8B.json"
    path.write_text(json.dumps(bench_doc()))
    run = read_run(path)
    assert run.file_format == "vllm-bench"
    check_hand_run(run)
    assert any("1 failed" in note for note in run.notes)


def test_csv_with_token_times(tmp_path):
    path = tmp_path / "run.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens,token_times_s\n0.5,20,2,0.7 1.0\n0,10,3,0.1;0.3;0.4\n")
    check_hand_run(read_run(path))


def test_csv_with_ttft_and_e2e_in_ms(tmp_path):
    path = tmp_path / "run.csv"
    path.write_text("timestamp,input_len,output_len,ttft_ms,latency_ms\n0,10,3,100,400\n0.5,20,2,200,500\n")
    run = read_run(path)
    check_hand_run(run, itl=False)
    assert run.itl_s.size == 0
    assert measured_side(run).latency["itl"] == dict.fromkeys(("mean", "p50", "p90", "p99"))


def test_csv_lengths_only(tmp_path):
    path = tmp_path / "run.csv"
    path.write_text("arrival,prompt,output\n0,10,3\n1,20,2\n")
    run = read_run(path)
    assert not run.has_latencies
    side = measured_side(run)
    assert side.output_tokens_per_s is None and side.latency["ttft"]["p50"] is None


def test_compare_rows_small_run_has_no_tails(tmp_path):
    run = read_run(write_jsonl(tmp_path / "requests_tiny.jsonl", ROWS))
    side = measured_side(run)
    rows = compare(side, side)
    assert [(r.metric, r.stat) for r in rows][:2] == [("throughput", "output_tokens_per_s"), ("throughput", "requests_per_s")]
    assert {r.stat for r in rows[2:]} == {"mean", "p50"}
    assert all(r.error == 0.0 for r in rows)


def test_distribution_ignores_nan():
    stats = distribution(np.array([1.0, np.nan, 3.0]))
    assert stats == {"mean": 2.0, "p50": 2.0, "p90": pytest.approx(2.8), "p99": pytest.approx(2.98)}


@pytest.mark.parametrize(
    "text, needle",
    [
        ('{"send": 0, "prompt": 1, "output": 1, "tok": [0.1]}\n{not json\n', ":2: not valid JSON"),
        ('{"send": 0, "prompt": 1, "output": 1}\n', ":1: missing field(s) tok"),
        ('{"send": 0, "prompt": 1, "output": 2, "tok": [0.3, 0.2]}\n', "non-decreasing"),
        ('{"send": 1, "prompt": 1, "output": 1, "tok": [0.5]}\n', "no earlier than send"),
        ('{"send": 0, "prompt": 0, "output": 1, "tok": [0.1]}\n', "prompt must be a positive whole number"),
        ('{"send": "x", "prompt": 1, "output": 1, "tok": [0.1]}\n', "send must be a finite number"),
        ('[1, 2]\n', ":1: each line must be a JSON object"),
        ("\n", "no requests"),
    ],
)
def test_malformed_jsonl(tmp_path, text, needle):
    path = tmp_path / "requests_bad.jsonl"
    path.write_text(text)
    with pytest.raises(TraceError, match=None) as err:
        read_run(path)
    assert needle in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize(
    "name, text, needle",
    [
        ("run.csv", "arrival_s,prompt_tokens\n0,1\n", "missing column(s) (output: one of"),
        ("run.csv", "arrival_s,prompt_tokens,output_tokens\n0,abc,1\n", ":2: prompt_tokens='abc' is not a number"),
        ("run.csv", "arrival_s,prompt_tokens,output_tokens\n0,1\n", ":2: the row has 2 fields"),
        ("run.csv", "", "empty file"),
        ("run.json", "{}", "--save-detailed"),
        ("run.json", "[1", "not valid JSON"),
        ("run.txt", "x", "cannot tell the format"),
    ],
)
def test_malformed_csv_bench_and_unknown(tmp_path, name, text, needle):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(TraceError) as err:
        read_run(path)
    assert needle in str(err.value)


@pytest.mark.parametrize("name", ["requests_x.jsonl.gz", "run.csv.gz", "run.json.gz"])
def test_corrupt_gzip(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not gzip data")
    with pytest.raises(TraceError, match="cannot"):
        read_run(path)


def test_missing_file(tmp_path):
    with pytest.raises(TraceError, match="no such file"):
        read_run(tmp_path / "nope.jsonl")
    with pytest.raises(TraceError, match="no such file or folder"):
        locate(tmp_path / "nope")


def test_meta_of_the_shared_runs():
    meta = read_meta(DATA / "meta.json")
    s = meta.settings
    assert (s.model, s.hardware, s.precision) == ("llama3_8b", "h200", "bf16")
    assert (s.max_num_seqs, s.max_num_batched_tokens, s.block_size, s.num_gpu_blocks) == (1024, 8192, 16, 56057)
    assert s.async_scheduling is True and s.max_model_len is None
    assert set(meta.runs) == {"b1", "pois_6", "off_4k_64", "pois_20"}
    overrides, _ = to_overrides(s)
    assert "scheduler.num_gpu_blocks_override=56057" in overrides
    assert "hardware=h200" in overrides


def test_settings_absent_from_the_schema_are_noted_not_mapped(monkeypatch):
    import sim.replay.settings as settings

    s = EngineSettings(async_scheduling=True, enable_prefix_caching=False, sources={"async_scheduling": "meta.json"})
    monkeypatch.setattr(settings, "scheduler_fields", lambda: {"enable_prefix_caching"})
    overrides, notes = settings.to_overrides(s)
    assert overrides == ["scheduler.enable_prefix_caching=false"]
    assert len(notes) == 1 and "scheduler.async_scheduling" in notes[0]
    monkeypatch.setattr(settings, "scheduler_fields", lambda: {"enable_prefix_caching", "async_scheduling"})
    overrides, notes = settings.to_overrides(s)
    assert "scheduler.async_scheduling=true" in overrides and not notes


def test_command_line_settings_win_over_meta():
    meta = EngineSettings(max_num_seqs=1024, hardware="h200", sources={"max_num_seqs": "meta.json", "hardware": "meta.json"})
    merged = meta.merged(EngineSettings(max_num_seqs=8, sources={"max_num_seqs": "command line"}))
    assert merged.max_num_seqs == 8 and merged.sources["max_num_seqs"] == "command line"
    assert merged.hardware == "h200" and merged.sources["hardware"] == "meta.json"


def test_gpu_and_model_names():
    assert hardware_name("NVIDIA H200") == "h200"
    assert hardware_name("NVIDIA A100 80GB") == "a100_80gb"
    with pytest.raises(ConfigError, match="several"):
        hardware_name("NVIDIA H100")
    assert _model_name("meta-llama/Llama-3.1-8B-Instruct") == "llama3_8b"
    assert _model_name("meta-llama/Llama-3.1-70B") == "llama3_70b"
    assert _model_name("llama3_8b") == "llama3_8b"


def test_run_names_and_meta(tmp_path):
    (tmp_path / "meta.json").write_text(json.dumps({"runs": [{"run": "a", "n": 2}, {"run": "b", "n": 2}]}))
    write_jsonl(tmp_path / "requests_a.jsonl", ROWS)
    write_jsonl(tmp_path / "requests_c.jsonl", ROWS)
    assert locate(tmp_path, "a").path.name == "requests_a.jsonl"
    with pytest.raises(TraceError, match="choose one with --run"):
        locate(tmp_path)
    with pytest.raises(TraceError, match="no run 'c' in runs"):
        locate(tmp_path / "requests_c.jsonl")
    with pytest.raises(TraceError, match="no run 'zz' in runs"):
        locate(tmp_path, "zz")
    with pytest.raises(TraceError, match="the file is run 'a', not --run 'b'"):
        locate(tmp_path / "requests_a.jsonl", "b")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "meta.json").write_text("{oops")
    write_jsonl(bad / "requests_a.jsonl", ROWS)
    with pytest.raises(SimError, match="not valid JSON"):
        locate(bad / "requests_a.jsonl")
