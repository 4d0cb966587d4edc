"""The traps a new user falls into on the command line, each run as that user would run it.

Each test runs the real command in a subprocess from a folder outside the repository and
checks what it prints or writes: misspelt keys (with and without `+`), a model read from
config.json, the header and folder of an overridden run, overload flags and cost at goodput,
bare-number token lengths, the hit rate and TTFT by turn, the analysis/ tools, progress with a
total and ETA, one unit convention, and the `sim` console script.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sim.progress import Progress, TaskProgress

TINY = ["workload.num_requests=20", "output.progress=false", "output.write_steps=false"]
MODEL_JSON = {  # a small Llama-shaped model
    "_name_or_path": "acme/tiny-llama", "model_type": "llama", "num_hidden_layers": 4,
    "hidden_size": 1024, "num_attention_heads": 16, "num_key_value_heads": 4,
    "intermediate_size": 2816, "vocab_size": 32000, "max_position_embeddings": 4096,
}  # fmt: skip


def sim(args: list[str], cwd: Path, module: str = "sim") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONHASHSEED": "0", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


# 1. misspelt keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, suggestion",
    [("+scheduler.max_num_seq=128", "scheduler.max_num_seqs"), ("+hardwre=h200", "hardware"),
     ("scheduler.max_num_seq=128", "scheduler.max_num_seqs"), ("slo.ttft=1", "slo.ttft_s")],
)
def test_a_key_the_schema_lacks_is_refused_with_the_closest_name(tmp_path, override, suggestion):
    line = one_error_line(sim([override, *TINY], tmp_path))
    assert f"did you mean {suggestion}?" in line
    assert not (tmp_path / "outputs").exists()  # nothing ran


# 2. models from config.json ------------------------------------------------------------------------


def test_a_model_from_config_json_is_named_by_the_file(tmp_path):
    folder = tmp_path / "tiny-llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(MODEL_JSON))
    run_dir = tmp_path / "run"
    proc = sim([f"model.hf_config_path={folder / 'config.json'}", *TINY, f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert summary["setup"]["model"] == "tiny-llama"
    assert "Llama-3.1-8B" not in json.dumps(summary["setup"]) and "llama3_8b" not in proc.stdout
    model = manifest["resolved_config"]["model"]
    assert model["name"] == "tiny-llama" and model["display_name"] == "acme/tiny-llama"
    assert model["num_hidden_layers"] == 4 and model["published_params_b"] is None
    assert ": tiny-llama on 1x h100_sxm" in proc.stdout
    named = tmp_path / "run_named"
    proc = sim([f"model.hf_config_path={folder / 'config.json'}", "model.name=mine", *TINY,
                f"hydra.run.dir={named}"], tmp_path)
    assert json.loads((named / "summary.json").read_text())["setup"]["model"] == "mine"


# 3. headers and folders ---------------------------------------------------------------------------


def test_an_overridden_run_says_so_and_is_filed_by_what_ran(tmp_path):
    proc = sim(["+scenario=llama8b_h100", "hardware=h200", "workload.rate=8", *TINY], tmp_path)
    assert proc.returncode == 0, proc.stderr
    head = proc.stdout.splitlines()[0]
    assert head.startswith("== llama8b_h100 with hardware=h200 workload.rate=8")
    assert "on 1x h200" in head
    assert "before the overrides above" in proc.stdout.splitlines()[1]
    folders = [p.name for p in (tmp_path / "outputs").iterdir()]
    assert folders == ["llama8b_h100+hardware=h200,workload.rate=8,workload.num_requests=20"]
    plain = sim(["+scenario=llama8b_h100", "output.progress=false"], tmp_path / "outputs" / "..")
    assert "llama8b_h100" in [p.name for p in (tmp_path / "outputs").iterdir()], plain.stderr


# 4. overload -------------------------------------------------------------------------------------


def test_an_overloaded_run_is_flagged_and_priced_at_goodput(tmp_path):
    proc = sim(["+scenario=llama70b_h100", "workload.rate=40", "workload.num_requests=300",
                "output.progress=false", "output.write_steps=false"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "!! MISSES SLO (TTFT p99" in out and "!! OVERLOADED (only" in out
    cost = next(line for line in out.splitlines() if line.startswith("cost "))
    assert "per M output tokens at goodput" in cost and "!! MISSES SLO; OVERLOADED" in cost
    healthy = sim(["+scenario=llama8b_h100", *TINY], tmp_path)
    assert "!!" not in healthy.stdout


# 5. fixed lengths ------------------------------------------------------------------------------------


def test_a_bare_number_is_a_fixed_length(tmp_path):
    run_dir = tmp_path / "run"
    proc = sim(["workload.prompt_tokens=1000", "workload.output_tokens=100", *TINY,
                f"hydra.run.dir={run_dir}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    requests = pq.read_table(run_dir / "requests.parquet").to_pydict()
    assert set(requests["prompt_tokens"]) == {1000} and set(requests["output_tokens"]) == {100}


# 6. answers the scenarios ask for -----------------------------------------------------------------


def test_sessions_print_ttft_by_turn_and_prefix_caching_the_hit_rate(tmp_path):
    proc = sim(["+scenario=chat_sessions_llama70b_h100", "workload.num_requests=60",
                "output.progress=false", "output.write_steps=false"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "TTFT by turn" in proc.stdout and "turn 2 " in proc.stdout
    assert "prefix cache hit rate" in proc.stdout
    plain = sim([*TINY, "scheduler.enable_prefix_caching=false"], tmp_path)
    assert "TTFT by turn" not in plain.stdout and "prefix cache hit rate" not in plain.stdout


# 7. analysis/ tools ----------------------------------------------------------------------------------


def test_analysis_tools_work_outside_the_repo_and_explain_mistakes(tmp_path):
    run_dir = tmp_path / "run"
    assert sim([*TINY, f"hydra.run.dir={run_dir}"], tmp_path).returncode == 0
    line = one_error_line(sim(["roofline", str(run_dir)], tmp_path, "analysis.plot"))
    assert "no steps.parquet" in line and "output.write_steps=true" in line
    sweep = tmp_path / "sweep"
    (sweep / "0" / ".hydra").mkdir(parents=True)
    (sweep / "0" / ".hydra" / "overrides.yaml").write_text("[]\n")
    line = one_error_line(sim(["dashboard", str(sweep)], tmp_path, "analysis.plot"))
    assert "sweep (multirun) folder" in line and "sim.sweep.collect" in line
    line = one_error_line(sim(["latency", str(sweep)], tmp_path, "analysis.plot"))
    assert "is a folder" in line
    proc = sim(["compare", str(run_dir), str(run_dir), "-o", str(tmp_path / "c.png")], tmp_path, "analysis.plot")
    assert proc.returncode == 0 and (tmp_path / "c.png").exists(), proc.stderr


def test_a_missing_extra_names_what_to_install(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from analysis.cli import run_cli; from analysis.plot import main\n"
            f"sys.exit(run_cli(main, ['run', {str(tmp_path)!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    line = one_error_line(proc)
    assert "pip install -e '.[plots]'" in line


def test_collect_on_an_empty_folder_writes_nothing(tmp_path):
    line = one_error_line(sim([str(tmp_path)], tmp_path, "sim.sweep.collect"))
    assert "no Hydra jobs" in line
    assert not (tmp_path / "sweep.parquet").exists()


# 8. long work -------------------------------------------------------------------------------------


def test_progress_shows_the_total_and_an_eta():
    progress = Progress(total_requests=1000, stream=io.StringIO())
    line = progress.line(sim_time_s=30.0, num_finished=250, elapsed_s=10.0)
    assert "250/1,000 requests" in line and "ETA 30 s" in line and "25%" in line
    by_time = Progress(horizon_s=100.0, stream=io.StringIO()).line(50.0, 7, 4.0)
    assert "ETA 4 s" in by_time
    stream = io.StringIO()
    tasks = TaskProgress(4, "candidates", stream=stream)
    tasks.advance("a: ok")
    assert "0/4 candidates" in stream.getvalue() and "ETA -" in stream.getvalue()
    assert "1/4 candidates" in tasks.line(60.0) and "ETA 3 min 00 s" in tasks.line(60.0)


def test_a_run_hands_its_total_to_the_progress_line(monkeypatch, tmp_path):
    import sim.run
    from conftest import compose_config
    from sim.config.build import build_run_spec, resolved_config

    seen = {}

    class Spy(Progress):
        def __init__(self, **kwargs):
            seen.update(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(sim.run, "Progress", Spy)
    cfg = compose_config(["workload.num_requests=7", "output.print_summary=false"])
    sim.run.simulate(build_run_spec(cfg), tmp_path, resolved_config(cfg))
    assert seen["total_requests"] == 7


# 9. units --------------------------------------------------------------------------------------------


def test_printed_tables_read_in_ms_and_percent(tmp_path):
    proc = sim(TINY, tmp_path)
    assert "meet TTFT<=2000 ms and TPOT<=100 ms" in proc.stdout and "latency (ms)" in proc.stdout
    cap = sim(["+scenario=llama8b_h100", "--requests", "60", "--confirm-factor", "1", "--tol", "0.2"],
              tmp_path, "sim.sweep.capacity")
    assert cap.returncode == 0, cap.stderr
    assert "TTFT p99 ms" in cap.stdout and "TTFT p99 <= 2000 ms" in cap.stdout


# 10. entry point ----------------------------------------------------------------------------------


def test_sim_is_a_console_script(tmp_path):
    from importlib.metadata import entry_points

    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts.get("sim") == "sim.__main__:main"
    assert scripts.get("sim-plan") == "sim.plan.__main__:main"
    exe = Path(sys.executable).with_name("sim")
    proc = subprocess.run([str(exe), *TINY], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("== default"), proc.stderr


def test_the_capacity_search_refuses_unknown_keys_too(tmp_path):
    line = one_error_line(sim(["+scheduler.max_num_seq=128"], tmp_path, "sim.sweep.capacity"))
    assert "did you mean scheduler.max_num_seqs?" in line
