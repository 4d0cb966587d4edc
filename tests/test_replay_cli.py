"""`python -m sim.replay` end to end on a real run (b1, 3 requests), and its clean refusals."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from sim.replay import read_run
from sim.replay.__main__ import main

DATA = Path(__file__).parent / "data" / "vllm"
B1 = DATA / "requests_b1.jsonl.gz"
REPO = Path(__file__).resolve().parents[1]


def test_cli_replays_b1(tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(B1), "--out", str(out), "--no-prefix-caching", "scheduler.max_model_len=8192"]) == 0
    table = capsys.readouterr().out
    assert "== replay of b1: 3 requests" in table
    flat = " ".join(table.split())  # the settings lines wrap
    assert "KV blocks 56,057 (meta.json)" in flat and "max_model_len 8,192 (override)" in flat
    for label in ("output tok/s", "requests/s", "TTFT p50 (ms)", "TPOT mean (ms)", "ITL p50 (ms)", "E2E p50 (ms)"):
        assert label in table
    assert "p99" not in table.split("metric", 1)[1]  # 3 requests: mean and p50 only

    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["run"] == "b1" and comparison["num_requests"] == 3
    assert len(comparison["rows"]) == 2 + 4 * 2
    assert comparison["settings"]["num_gpu_blocks"] == {"value": 56057, "source": "meta.json"}
    assert comparison["simulated_requests"] == {"finished": 3, "rejected": 0, "unfinished": 0}
    ttft = next(r for r in comparison["rows"] if r["metric"] == "ttft" and r["stat"] == "p50")
    assert ttft["measured"] == pytest.approx(float(np.median(read_run(B1).ttft_s)))
    assert ttft["error"] == pytest.approx(ttft["simulated"] / ttft["measured"] - 1)
    assert (out / "cdf.png").stat().st_size > 10_000

    # The replay keeps the measured send times (the trace starts at the first send).
    sim = pq.read_table(out / "sim" / "requests.parquet").to_pydict()
    sends = read_run(B1).send_s
    assert np.asarray(sim["arrival_s"]) + sends[0] == pytest.approx(sends, abs=1e-12)
    assert sim["prompt_tokens"] == [1024] * 3 and sim["output_tokens"] == [256] * 3
    summary = json.loads((out / "sim" / "summary.json").read_text())
    assert summary["setup"]["num_gpu_blocks"] == 56057
    assert summary["setup"]["enable_prefix_caching"] is False
    assert summary["setup"]["hardware"] == "h200"


def test_overrides_and_options_win_over_meta(tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(DATA), "--run", "b1", "--out", str(out), "--max-num-seqs", "2",
                 "--no-plot", "scheduler.max_num_batched_tokens=512"]) == 0
    summary = json.loads((out / "sim" / "summary.json").read_text())
    assert summary["setup"]["max_num_seqs"] == 2
    assert summary["setup"]["max_num_batched_tokens"] == 512
    assert not (out / "cdf.png").exists()
    comparison = json.loads((out / "comparison.json").read_text())
    assert "scheduler.max_num_batched_tokens=8192" not in comparison["overrides"]
    assert comparison["settings"]["max_num_seqs"]["source"] == "command line"


def test_another_engine_than_the_measured_one_gets_its_own_kv_block_count(tmp_path, capsys):
    # meta.json's 56,057 blocks are Llama-3.1-8B's in bf16: for 70B in fp8 they would need
    # 294 GB of one H200, so the replay sizes the cache for the engine asked for, and says so.
    out = tmp_path / "out"
    assert main([str(B1), "--out", str(out), "--no-plot", "--model", "llama3_70b", "--precision", "fp8"]) == 0
    flat = " ".join(capsys.readouterr().out.split())
    assert "meta.json's 56,057 were profiled by the engine as measured, and model, precision differ" in flat
    summary = json.loads((out / "sim" / "summary.json").read_text())
    assert summary["setup"]["model"] == "llama3_70b"
    assert 0 < summary["setup"]["num_gpu_blocks"] < 56057
    comparison = json.loads((out / "comparison.json").read_text())
    assert "num_gpu_blocks" not in comparison["settings"]  # not known: the simulator's plan


def test_a_block_count_given_for_another_engine_is_kept_or_refused(tmp_path, capsys):
    # --num-gpu-blocks is the user's own: kept when it fits, one clear error when it does not.
    args = [str(B1), "--no-plot", "--model", "llama3_70b", "--precision", "fp8"]
    assert main([*args, "--out", str(tmp_path / "a"), "--num-gpu-blocks", "9000"]) == 0
    assert json.loads((tmp_path / "a" / "sim" / "summary.json").read_text())["setup"]["num_gpu_blocks"] == 9000
    capsys.readouterr()
    assert run_cli([*args, "--out", str(tmp_path / "b"), "--num-gpu-blocks", "56057"]) == 2
    assert "vLLM could not allocate it. At most" in one_error_line(capsys)


def test_the_kv_cache_dtype_of_meta_json_is_replayed(tmp_path, capsys):
    # A run measured with --kv-cache-dtype fp8: its meta.json says cache_dtype fp8_e4m3, and
    # its block count (here twice the bf16 one) belongs to that engine, so it is kept.
    meta = json.loads((DATA / "meta.json").read_text())
    meta["cache"] |= {"cache_dtype": "fp8_e4m3", "num_gpu_blocks": 112_000}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    (tmp_path / B1.name).write_bytes(B1.read_bytes())
    out = tmp_path / "out"
    assert main([str(tmp_path / B1.name), "--out", str(out), "--no-plot"]) == 0
    flat = " ".join(capsys.readouterr().out.split())
    assert "KV cache dtype fp8 (meta.json)" in flat and "KV blocks 112,000 (meta.json)" in flat
    summary = json.loads((out / "sim" / "summary.json").read_text())
    assert summary["setup"]["kv_cache_dtype"] == "fp8" and summary["setup"]["num_gpu_blocks"] == 112_000
    assert summary["setup"]["memory"]["kv_bytes_per_token"] == 32 * 8 * 128 * 2 * 1  # K and V, one byte


def test_another_kv_cache_dtype_on_the_command_line_resizes_the_cache(tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(B1), "--out", str(out), "--no-plot", "--kv-cache-dtype", "fp8"]) == 0
    flat = " ".join(capsys.readouterr().out.split())
    assert "KV cache dtype fp8 (command line)" in flat and "and kv_cache_dtype differs here" in flat
    setup = json.loads((out / "sim" / "summary.json").read_text())["setup"]
    assert setup["kv_cache_dtype"] == "fp8" and setup["num_gpu_blocks"] > 56057 * 1.9


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["{tmp}/missing.jsonl"], "no such file"),
        ([str(DATA), "--run", "pois_99"], "no run 'pois_99' in runs[]"),
        ([str(B1), "--format", "xml"], "invalid choice"),
        ([str(B1), "scheduler.max_num_seqs=lots"], "cannot compose the config"),
        ([str(B1), "nonsense"], "neither an option nor a key=value override"),
        ([str(B1), "--hardware", "tpu9"], "cannot compose the config"),
        ([str(B1), "--kv-cache-dtype", "int4"], "kv_cache_dtype 'int4' (command line) is not one the simulator prices"),
    ],
)
def test_bad_input_is_one_error_line(tmp_path, capsys, args, needle):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert run_cli([*args, "--out", str(tmp_path / "out")]) == 2
    assert needle in one_error_line(capsys)


def run_cli(args: list[str]) -> int:
    """main()'s exit code, whether it returns it or argparse exits with it."""
    try:
        return main(args)
    except SystemExit as exit_:
        return int(exit_.code)


def test_unknown_model_without_meta(tmp_path, capsys):
    path = tmp_path / "run.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens\n0,10,3\n")
    assert main([str(path), "--out", str(tmp_path / "out")]) == 2
    assert "pass --model NAME" in one_error_line(capsys)


def test_malformed_line_from_the_command_line(tmp_path):
    bad = tmp_path / "requests_x.jsonl"
    bad.write_text('{"send": 0, "prompt": 1, "output": 1, "tok": [0.1]}\n{"send": 0\n')
    proc = subprocess.run(
        [sys.executable, "-m", "sim.replay", str(bad), "--model", "llama3_8b", "--hardware", "h200"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {bad}:2: not valid JSON (Expecting ',' delimiter); each line must be one JSON object"
    assert "Traceback" not in proc.stderr


def test_validate_e2e_on_an_archive(tmp_path, capsys):
    """analysis/validate_e2e.py extracts a set's tar.gz and tabulates every run it lists."""
    sys.path.insert(0, str(REPO))
    from analysis import validate_e2e

    folder = tmp_path / "set" / "one_session"
    folder.mkdir(parents=True)
    meta = json.loads((DATA / "meta.json").read_text())
    meta["runs"] = [r for r in meta["runs"] if r["run"] == "b1"]
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / "requests_b1.jsonl.gz").write_bytes(B1.read_bytes())
    archive_dir = tmp_path / "shared"
    archive_dir.mkdir()
    with tarfile.open(archive_dir / "runs.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="one_session")
    out = tmp_path / "val"
    assert validate_e2e.main([str(archive_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "b1" in printed and "TTFT p50" in printed and "TTFT p99" not in printed
    assert "targets (median |error| <= 5% per metric, no run-metric > 15%)" in printed
    md = (out / "validate_e2e.md").read_text()
    assert md.startswith("| run | throughput | TTFT p50 |")
    assert "| run | metric | vLLM | sim | error |" in md
    cells = json.loads((out / "validate_e2e.json").read_text())
    assert {c["column"] for c in cells} == {"throughput", "TTFT p50", "TPOT p50", "E2E p50", "ITL p50"}
    assert validate_e2e.main([str(tmp_path / "empty_dir_missing")]) == 2


@pytest.mark.parametrize("fmt", ["vllm-bench", "csv"])
def test_cli_other_formats(tmp_path, capsys, fmt):
    """A vllm bench serve JSON and a CSV replay through the same path, settings on the command line."""
    if fmt == "vllm-bench":
        path = tmp_path / "bench.json"
        path.write_text(json.dumps({
            "start_times": [50.0, 50.2], "input_lens": [512, 256], "output_lens": [32, 16],
            "ttfts": [0.03, 0.02], "itls": [[0.005] * 31, [0.006] * 15], "latencies": [0.185, 0.11],
            "errors": ["", ""],
        }))
    else:
        path = tmp_path / "run.csv"
        path.write_text("arrival_s,prompt_tokens,output_tokens,ttft_s,e2e_s\n0,512,32,0.03,0.185\n0.2,256,16,0.02,0.11\n")
    out = tmp_path / "out"
    assert main([str(path), "--out", str(out), "--model", "llama3_8b", "--hardware", "h200", "--no-plot"]) == 0
    assert f"2 requests ({fmt}" in capsys.readouterr().out
    rows = {(r["metric"], r["stat"]): r for r in json.loads((out / "comparison.json").read_text())["rows"]}
    assert rows[("ttft", "p50")]["measured"] == pytest.approx(0.025)
    assert rows[("tpot", "mean")]["measured"] == pytest.approx((0.155 / 31 + 0.09 / 15) / 2)
    assert rows[("ttft", "p50")]["simulated"] > 0
    assert (rows[("itl", "p50")]["measured"] is None) == (fmt == "csv")


def test_b1_replayed_one_at_a_time_sends_each_request_at_the_previous_answer(tmp_path, capsys):
    """b1's client sent each request when the one before was answered: under --max-concurrency 1
    the simulated sends follow the simulated answers, not the measured clock."""
    out = tmp_path / "out"
    assert main([str(B1), "--out", str(out), "--no-plot", "--max-concurrency", "1"]) == 0
    flat = " ".join(capsys.readouterr().out.split())
    assert "client at most 1 request(s) in flight (command line); 2 request(s) waited for a slot" in flat
    sim = pq.read_table(out / "sim" / "requests.parquet").to_pydict()
    assert sim["arrival_s"][1:] == sim["finish_s"][:-1]
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["client"] == {"max_concurrency": 1, "source": "command line",
                                    "requests_that_waited_for_a_slot": 2}


def test_a_small_run_is_the_median_of_several_seeds(tmp_path, capsys):
    from sim.replay.compare import SMALL_RUN_SEEDS

    out = tmp_path / "out"
    assert main([str(B1), "--out", str(out), "--no-plot"]) == 0
    assert "simulated over the seeds" in capsys.readouterr().out
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    ttfts = []
    for seed in range(SMALL_RUN_SEEDS):
        folder = out / "sim" if seed == 0 else out / "sim_seeds" / f"seed_{seed}"
        ttfts.append(float(np.median(pq.read_table(folder / "requests.parquet").column("ttft_s").to_numpy())))
    ttft = next(r for r in rows if r["metric"] == "ttft" and r["stat"] == "p50")
    assert ttft["simulated"] == pytest.approx(float(np.median(ttfts)))
    assert (ttft["simulated_low"], ttft["simulated_high"]) == (min(ttfts), max(ttfts))
    assert min(ttfts) < max(ttfts)  # the seeds draw different launches
    # A seed given on the command line is that one simulation.
    assert main([str(B1), "--out", str(tmp_path / "one"), "--no-plot", "seed=4"]) == 0
    rows = json.loads((tmp_path / "one" / "comparison.json").read_text())["rows"]
    assert all(r["simulated_low"] is None for r in rows)
    assert not (tmp_path / "one" / "sim_seeds").exists()


def test_a_bench_run_at_infinite_rate_with_max_concurrency_replays_its_client(tmp_path, capsys):
    path = tmp_path / "bench.json"
    n = 6
    path.write_text(json.dumps({
        "request_rate": "inf", "max_concurrency": 2,
        "start_times": [10.0 + 0.3 * (i // 2) for i in range(n)], "input_lens": [256] * n, "output_lens": [16] * n,
        "ttfts": [0.03] * n, "itls": [[0.005] * 15] * n, "latencies": [0.3] * n, "errors": [""] * n,
    }))
    out = tmp_path / "out"
    assert main([str(path), "--out", str(out), "--model", "llama3_8b", "--hardware", "h200", "--no-plot"]) == 0
    assert "at most 2 request(s) in flight (vllm-bench file); 4 request(s) waited" in " ".join(capsys.readouterr().out.split())
    sim = pq.read_table(out / "sim" / "requests.parquet").to_pydict()
    assert sim["arrival_s"][:2] == [0.0, 0.0]
    assert sorted(sim["arrival_s"][2:4]) == sorted(sim["finish_s"][:2])


def test_due_times_tell_waiting_requests_from_timed_ones():
    from sim.replay.client_limit import SLOT_REACTION_S, due_times
    from sim.replay.measured import RunBuilder

    def run(rows):
        b = RunBuilder("t", "t.csv", "csv")
        for send, e2e in rows:
            b.add(send, 100, 10, e2e_s=e2e)
        return b.build()

    # One at a time, each sent 1 ms after the previous answer: all but the first waited.
    back_to_back = run([(0.0, 1.0), (1.001, 1.0), (2.002, 1.0)])
    due, waited = due_times(back_to_back, 1)
    assert waited == 2 and list(due) == [0.0, 0.0, 0.0]
    # Sent long after the slot freed: on its own clock.
    timed = run([(0.0, 1.0), (1.0 + 10 * SLOT_REACTION_S, 1.0)])
    due, waited = due_times(timed, 1)
    assert waited == 0 and list(due) == list(timed.send_s)
    # Two slots, one still free when a request is sent just after a finish: it did not wait.
    free_slot = run([(0.0, 1.0), (1.001, 1.0)])
    assert due_times(free_slot, 2)[1] == 0
    # Two answers at once free two slots; both requests sent right after waited.
    pair = run([(0.0, 1.0), (0.0, 1.0), (1.001, 1.0), (1.002, 1.0)])
    due, waited = due_times(pair, 2)
    assert waited == 2 and list(due) == [0.0, 0.0, 0.0, 0.0]


def test_a_run_that_looks_concurrency_limited_gets_a_hint(tmp_path, capsys):
    from sim.replay.client_limit import limit_hint
    from sim.replay.measured import RunBuilder

    assert main([str(B1), "--out", str(tmp_path / "out"), "--no-plot", "seed=0"]) == 0
    flat = " ".join(capsys.readouterr().out.split())
    assert "never had more than 1 request(s) in flight, and 2 were sent within 5 ms of an answer" in flat
    assert "replay it with --max-concurrency 1" in flat
    # Open-loop sends that happen to follow answers now and then get no hint.
    b = RunBuilder("t", "t.csv", "csv")
    for i in range(40):
        b.add(0.1 * i, 100, 10, e2e_s=0.35)
    assert limit_hint(b.build()) is None
