"""The side-by-side answer of a comparison scenario (sim.compare)."""

from __future__ import annotations

from conftest import compose_config

from sim.compare import Row, format_comparison, run_comparison


def test_the_answer_is_the_most_tokens_per_gpu_within_the_tpot_target():
    rows = [
        Row("A", 64, gpus=8, tokens_per_s_per_gpu=300, tpot_p50_s=0.04),
        Row("A", 256, gpus=8, tokens_per_s_per_gpu=500, tpot_p50_s=0.07),  # misses the target
        Row("B", 64, gpus=8, tokens_per_s_per_gpu=350, tpot_p50_s=0.045),
        Row("C", 64, refused="does not fit"),
    ]
    text = format_comparison(rows, tpot_s=0.05)
    assert "answer: B gives the most output tokens/s per GPU within TPOT p50 <= 50 ms: 350 (then A 300)" in text
    assert "refused: does not fit" in text and "never within the target: C" in text


def test_no_layout_within_the_target_says_so():
    text = format_comparison([Row("A", 8, gpus=1, tokens_per_s_per_gpu=10, tpot_p50_s=1.0)], tpot_s=0.05)
    assert "answer: no layout meets" in text


def test_a_comparison_runs_every_layout_and_files_each_run(tmp_path):
    cfg = compose_config([
        "workload=closed_loop_chat", "workload.num_requests=12", "compare.concurrency=[2,4]",
        "output.print_summary=false", "output.progress=false",
    ])  # fmt: skip
    cfg.compare.layouts = {"TP1": ["parallel.tp=1"], "PP2": ["parallel.pp=2"], "BAD": ["parallel.pp=99"]}
    text = run_comparison(cfg, tmp_path)
    for label in ("TP1", "PP2"):
        for users in (2, 4):
            assert (tmp_path / "compare" / f"{label}_c{users}" / "summary.json").exists()
    assert "BAD" in text and "refused: parallel.pp=99 exceeds" in text
    assert "answer:" in text
