"""Bad input gets one clear message and a non-zero exit code, never a traceback.

Three layers: the command line (a handful of subprocesses, run at once); the config boundary
(`build_run_spec` refuses with a ConfigError naming the key); and requests the engine cannot
serve (rejected with a reason and counted, while the run goes on).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sim.config.build import build_run_spec, resolved_config
from sim.errors import ConfigError, DoesNotFitError, SimError, TraceError
from sim.run import simulate
from conftest import REPO_ROOT, compose_config

QUIET = ["output.print_summary=false", "output.progress=false"]
AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def _traces(tmp: Path) -> dict[str, Path]:
    bodies = {
        "empty.csv": "",
        "backwards.csv": AZURE_HEADER + "2023-11-16 18:15:46.6,374,44\n2023-11-16 18:15:40.0,374,44\n",
        "negative.csv": AZURE_HEADER + "2023-11-16 18:15:46.6,374,-44\n",
        "missing.csv": "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.6,374\n",
        "words.csv": AZURE_HEADER + "2023-11-16 18:15:46.6,lots,44\n",
    }
    paths = {}
    for name, body in bodies.items():
        paths[name] = tmp / name
        paths[name].write_text(body)
    return paths


# (overrides, exit code, fragments the message must contain)
CLI_CASES = [
    (["model=no_such_model"], 1, ["Could not find 'model/no_such_model'", "llama3_70b", "mistral_7b"]),
    (["hardware=tpu"], 1, ["Could not find 'hardware/tpu'", "h100_sxm", "mi300x"]),
    (["+scenario=no_such"], 1, ["Could not find 'scenario/no_such'", "llama70b_h100"]),
    (["scheduler.max_num_seqs=lots"], 1, ["scheduler.max_num_seqs", "'lots'"]),
    (["workload.rate=0"], 2, ["workload.rate", "positive"]),
    (["parallel.tp=3"], 2, ["tp=3", "valid TP sizes: 1, 2, 4, 8"]),
    (["parallel.tp=12"], 2, ["8 GPUs", "multiple"]),
    (["parallel.pp=64"], 2, ["parallel.pp=64", "32 layers"]),
    (["parallel.ep=2"], 2, ["parallel.ep=2", "no experts"]),
    (["model=mixtral_8x7b", "parallel.dp=3", "parallel.ep=3"], 2, ["parallel.ep=3 does not divide", "8 experts"]),
    (["model=llama3_70b"], 2, ["does not fit", "GB", "Smallest TP that fits in bf16: 4"]),
    (["horizon_s=nan"], 2, ["horizon_s", "not a finite number"]),
    (["seed=${oops}"], 2, ["seed", "oops"]),
    (["workload=azure_conv", "workload.trace={backwards.csv}", "workload.trace_format=azure"], 2, ["backwards.csv", "line 3", "earlier"]),
    (["workload=azure_conv", "workload.trace={empty.csv}", "workload.trace_format=azure"], 2, ["empty.csv", "empty"]),
]


def test_the_command_line_prints_one_clear_message_per_bad_input(tmp_path):
    traces = _traces(tmp_path)
    procs = []
    for i, (overrides, _, _) in enumerate(CLI_CASES):
        args = list(overrides)
        for name, path in traces.items():
            args = [a.replace("{" + name + "}", str(path)) for a in args]
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "sim", *args, *QUIET, f"hydra.run.dir={tmp_path / str(i)}"],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    for proc, (overrides, code, fragments) in zip(procs, CLI_CASES):
        _, stderr = proc.communicate(timeout=180)
        assert proc.returncode == code, (overrides, stderr)
        assert "Traceback" not in stderr, (overrides, stderr)
        for fragment in fragments:
            assert fragment in stderr, (overrides, fragment, stderr)
        if code == 2:  # a SimError: exactly one `error: ...` line (warnings may precede it)
            errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
            assert len(errors) == 1 and stderr.rstrip().endswith(errors[0]), stderr


# ---- the config boundary ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["parallel.replicas=0"], "parallel.replicas"),
        (["parallel.tp=-2"], "parallel.tp"),
        (["scheduler.gpu_memory_utilization=1.5"], "gpu_memory_utilization"),
        (["scheduler.block_size=3"], "block_size must be a power of two"),
        (["scheduler.num_gpu_blocks_override=1"], "less than one max_model_len"),
        (["scheduler.num_gpu_blocks_override=0"], "num_gpu_blocks_override"),
        (["scheduler.max_model_len=200000"], "max_model_len"),
        (["scheduler.max_num_batched_tokens=-5"], "max_num_batched_tokens"),
        (["scheduler.enable_chunked_prefill=false", "scheduler.max_num_batched_tokens=512"],
         "enable_chunked_prefill"),
        (["scheduler.long_prefill_token_threshold=-1"], "long_prefill_token_threshold"),
        (["scheduler.max_waiting_requests=0"], "scheduler.max_waiting_requests"),
        (["horizon_s=-1"], "horizon_s"),
        (["horizon_s=inf"], "horizon_s"),
        (["seed=-1"], "seed"),
        (["slo.ttft_s=0"], "slo.ttft_s"),
        (["workload.rate=-3"], "workload.rate"),
        (["workload.num_requests=0"], "workload.num_requests"),
        (["workload.prompt_tokens.min=0"], "workload.prompt_tokens.min"),
        (["workload.prompt_tokens.kind=fixed", "workload.prompt_tokens.value=-7"], "workload.prompt_tokens.value"),
        (["workload.num_requests=null"], "never ends"),
        (["hardware.memory_gib=nan"], "hardware.memory_gib"),
        (["model.num_key_value_heads=0"], "num_key_value_heads"),
        (["model.hf_config_path=/no/such/config.json"], "no such file"),
        (["precision=fp4"], "no fp4 tensor cores"),
        (["cost.gemm_efficiency=0"], "gemm_efficiency"),
    ],
)
def test_the_config_boundary_refuses_with_the_key_named(tmp_path, overrides, fragment):
    cfg = compose_config(["workload.num_requests=5", *overrides, *QUIET])
    with pytest.raises(SimError) as err:
        spec = build_run_spec(cfg)
        simulate(spec, tmp_path, resolved_config(cfg))  # the cost model refuses at start-up
    assert fragment in str(err.value)
    assert not list(tmp_path.glob("*")), "a refused run must not leave output files"


def test_a_model_that_does_not_fit_says_what_it_needs(compose_cfg):
    with pytest.raises(DoesNotFitError) as err:
        build_run_spec(compose_cfg(["model=llama3_405b", "parallel=tp8"]))
    message = str(err.value)
    assert "each GPU needs 103.5 GB" in message and "At TP=8 these precisions fit: fp8" in message


@pytest.mark.parametrize("name, fragment", [
    ("empty.csv", "empty"), ("backwards.csv", "earlier than the previous row"),
    ("negative.csv", "negative token count"), ("missing.csv", "missing column"),
    ("words.csv", "'lots'"),
])
def test_a_malformed_trace_names_the_file_and_line(tmp_path, name, fragment):
    path = _traces(tmp_path)[name]
    cfg = compose_config(["workload=azure_conv", f"workload.trace={path}", "workload.trace_format=azure", *QUIET])
    with pytest.raises(TraceError) as err:
        simulate(build_run_spec(cfg), tmp_path / "out", resolved_config(cfg))
    message = str(err.value)
    assert str(path) in message and "line" in message and fragment in message
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


# ---- requests the engine cannot serve: rejected, counted, the run goes on --------------------


def _run(tmp_path: Path, overrides: list[str]):
    cfg = compose_config([*overrides, *QUIET])
    result = simulate(build_run_spec(cfg), tmp_path, resolved_config(cfg))
    return result.summary["requests"], pq.read_table(tmp_path / "requests.parquet").to_pylist()


def test_requests_longer_than_max_model_len_are_rejected_and_counted(tmp_path):
    counts, rows = _run(tmp_path, [
        "scheduler.max_model_len=1024", "workload.num_requests=200",
        "workload.prompt_tokens.kind=uniform", "workload.prompt_tokens.low=100",
        "workload.prompt_tokens.high=1500", "workload.output_tokens.kind=fixed",
        "workload.output_tokens.value=20",
    ])
    rejected = [r for r in rows if r["status"] == "rejected"]
    assert counts["rejected"] == len(rejected) > 0 and counts["finished"] == 200 - len(rejected) > 0
    for r in rejected:
        assert r["prompt_tokens"] + r["output_tokens"] > 1024
        assert "exceeds max_model_len 1024" in r["reject_reason"]
    for r in rows:
        if r["status"] == "finished":
            assert r["prompt_tokens"] + r["output_tokens"] <= 1024


def test_requests_larger_than_the_whole_kv_cache_are_rejected_and_counted(tmp_path):
    # 32 blocks of 16 tokens, one of them vLLM's null block: 496 tokens for requests.
    counts, rows = _run(tmp_path, [
        "scheduler.max_model_len=512", "scheduler.num_gpu_blocks_override=32",
        "workload.num_requests=40", "workload.prompt_tokens.kind=uniform",
        "workload.prompt_tokens.low=400", "workload.prompt_tokens.high=500",
        "workload.output_tokens.kind=fixed", "workload.output_tokens.value=4",
    ])
    rejected = [r for r in rows if r["status"] == "rejected"]
    assert counts["rejected"] == len(rejected) > 0 and counts["finished"] > 0
    assert counts["finished"] + counts["rejected"] == counts["arrived"] == 40
    for r in rejected:
        assert 496 < r["prompt_tokens"] + 4 <= 512
        assert "KV blocks but the whole cache has 31" in r["reject_reason"]


def test_errors_are_sim_errors():
    assert issubclass(ConfigError, SimError) and issubclass(TraceError, SimError)
    assert issubclass(DoesNotFitError, ConfigError)


def test_a_scenario_file_that_is_not_yaml_is_a_config_error(tmp_path):
    from sim.config.scenarios import register_scenarios

    (tmp_path / "broken.yaml").write_text("# @package _global_\nmodel: [\n")
    with pytest.raises(ConfigError, match=r"broken.yaml is not valid YAML.*line 3"):
        register_scenarios(tmp_path)
    (tmp_path / "broken.yaml").write_text("- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        register_scenarios(tmp_path)


def test_an_empty_scenario_is_the_default_setup(tmp_path):
    from sim.config.scenarios import register_scenarios

    (tmp_path / "empty_for_test.yaml").write_text("")
    register_scenarios(tmp_path)
    counts, _ = _run(tmp_path / "out", ["+scenario=empty_for_test", "workload.num_requests=5"])
    assert counts["finished"] == 5
