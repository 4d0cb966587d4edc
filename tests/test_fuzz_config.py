"""Config fuzzing: random override combinations, valid and invalid, across every group.

Each draw either runs end to end (tiny workload, at most 20 requests) or fails with a SimError
or a Hydra/OmegaConf config error whose message names what is wrong; any other exception is a
bug that user input can reach. Composition is in-process: each base config (a scenario or a
group choice) is composed by Hydra once, and the drawn `key=value` overrides are parsed by
Hydra's override grammar and applied as `compose` applies them, so one draw costs milliseconds
instead of a full composition. A few draws compose everything through Hydra from scratch.
"""

from __future__ import annotations

import atexit
import copy
import functools
import json
import shutil
import tempfile
from pathlib import Path

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from omegaconf.errors import OmegaConfBaseException

from sim.config.build import build_run_spec, resolved_config
from sim.errors import SimError
from sim.run import simulate
from conftest import compose_config

QUIET = ["output.print_summary=false", "output.progress=false"]

# Group choices composed once each (the invalid ones fail at composition, as on the CLI).
BASES = (
    (),
    ("+scenario=llama70b_h100",),
    ("+scenario=llama70b_h100_fp8",),
    ("+scenario=llama70b_h200",),
    ("model=mixtral_8x7b", "parallel=tp2"),
    ("model=qwen2_7b", "hardware=l40s", "precision=int4"),
    ("hardware=a100_80gb", "precision=fp8"),  # no fp8 tensor cores: refused
    ("hardware=b200", "precision=fp4"),
    ("precision=fp8_kv",),
    ("workload=offline",),
    ("workload=gamma_bursty",),
    ("workload=rate_steps",),
    ("workload=diurnal",),
    ("workload=sharegpt_poisson",),
    ("workload=azure_code",),
    ("workload=mooncake_conversation", "scheduler.enable_prefix_caching=true"),
    ("workload=closed_loop_chat",),
    ("workload=chat_sessions", "scheduler.enable_prefix_caching=true"),
    ("model=no_such_model",),
    ("+scenario=no_such_scenario",),
    ("deployment=pd_2p2d_h100",),
    ("deployment=mixed_h100x2_h200x2",),
)

NUMBERS = ["0", "-1", "abc", "null", "nan", "inf", "1e400", "''", "[1,2]", "{a:1}"]

# Malformed input files, written once per session.
_FILES = Path(tempfile.mkdtemp(prefix="sim-fuzz-"))
atexit.register(shutil.rmtree, _FILES, True)
BAD_FILES = {
    "empty.csv": "",
    "backwards.csv": "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6,374,44\n"
    "2023-11-16 18:15:40.0,374,44\n",
    "negative.jsonl": '{"timestamp": 0, "input_length": 600, "output_length": -5}\n',
    "config_list.json": "[1, 2]",
    "config_broken.json": '{"hidden_size": 4096,',
    "config_partial.json": '{"hidden_size": 4096, "num_attention_heads": "many"}',
}
for _name, _body in BAD_FILES.items():
    (_FILES / _name).write_text(_body)
TRACE_FILES = [str(_FILES / n) for n in ("empty.csv", "backwards.csv", "negative.jsonl")]
HF_FILES = [str(_FILES / n) for n in BAD_FILES if n.startswith("config")]
TOKENS = ["1", "7", "64", "300", "2048"]

KEY_VALUES: dict[str, list[str]] = {
    "seed": ["0", "7", "-1", "1.5", "99999999999999999999999", "abc"],
    "horizon_s": ["null", "0.05", "0.5", "30", "0", "-5", "inf", "nan"],
    "parallel.tp": ["1", "2", "3", "4", "8", "16", "0", "-2"],
    "parallel.replicas": ["1", "2", "3", "0", "-1"],
    "parallel.router": ["round_robin", "least_outstanding", "random", "''"],
    "scheduler.max_num_batched_tokens": ["16", "100", "512", "8192", "0", "-1"],
    "scheduler.max_num_seqs": ["1", "4", "256", "0", "-3"],
    "scheduler.max_model_len": ["null", "1", "64", "300", "2048", "4096", "10000000", "0", "-1"],
    "scheduler.enable_chunked_prefill": ["true", "false", "maybe", "1"],
    "scheduler.long_prefill_token_threshold": ["0", "16", "-1"],
    "scheduler.block_size": ["1", "3", "8", "16", "32", "0", "-16", "4096"],
    "scheduler.gpu_memory_utilization": ["0.9", "0.5", "1.0", "1.5", "0", "-0.1"],
    "scheduler.num_gpu_blocks_override": ["null", "1", "20", "200", "5000", "0", "-5"],
    "scheduler.enable_prefix_caching": ["true", "false"],
    "scheduler.max_waiting_requests": ["null", "1", "4", "0", "-1"],
    "workload.num_requests": ["1", "5", "20", "0", "-1"],
    "workload.arrival": ["poisson", "constant", "gamma", "offline", "steps", "ramp", "diurnal",
                         "trace", "closed_loop", "bogus"],
    "workload.concurrency": ["1", "4", "64", "0", "-2"],
    "workload.think_time_s": ["0", "0.5", "15", "-1"],
    "workload.think_time_kind": ["fixed", "exponential", "gaussian"],
    "workload.turns.kind": ["fixed", "uniform", "zipf"],
    "workload.turns.value": ["1", "3", "0"],
    "workload.turns.low": ["1", "2", "0"],
    "workload.turns.high": ["2", "8", "0"],
    "workload.shared_prefix_tokens": ["0", "100", "1000", "-5"],
    "workload.shared_prefix_fraction": ["0", "0.5", "1", "1.5", "-0.1"],
    "workload.rate": ["0.5", "4", "1000", "0", "-1"],
    "workload.cv": ["null", "0.5", "3", "0", "-1"],
    "workload.duration_s": ["null", "1", "0.001", "0", "-1"],
    "workload.schedule": ["[]", "[{t_s:0,rate:2},{t_s:1,rate:8}]", "[{t_s:1,rate:2}]",
                          "[{t_s:0,rate:-1}]", "[{t_s:0,rate:3},{t_s:0,rate:1}]", "[{t_s:0,rate:0}]"],
    "workload.amplitude": ["0.5", "2", "-1"],
    "workload.period_s": ["10", "0", "-10"],
    "workload.lengths_from": ["null", "sharegpt", "arxiv", "azure_conv", "/no/such/file.csv"],
    "workload.trace": ["null", "azure_conv", "mooncake_synthetic", "/no/such/trace.csv", *TRACE_FILES],
    "workload.trace_format": ["auto", "azure", "mooncake", "csv", "jsonl", "parquet", "xml"],
    "workload.speedup": ["1", "10", "0", "-2"],
    "workload.target_rate": ["null", "5", "0"],
    "workload.start_s": ["0", "10", "-1", "1e9"],
    "workload.end_s": ["null", "30", "0"],
    "workload.spread_ties_s": ["0", "3", "-1", "1e9"],
    "workload.columns.arrival_unit": ["s", "ms", "datetime", "weeks"],
    "workload.columns.prefix_hashes": ["null", "hash_ids"],
    "workload.columns.prefix_block_tokens": ["0", "512", "-1"],
    "model.num_attention_heads": ["32", "7", "0"],
    "model.num_key_value_heads": ["8", "3", "0"],
    "model.hidden_size": ["4096", "100", "0", "-1"],
    "model.head_dim": ["null", "128", "0"],
    "model.max_position_embeddings": ["128", "8192", "0"],
    "model.num_local_experts": ["0", "8", "-1"],
    "model.num_experts_per_tok": ["0", "2", "9"],
    "model.hf_config_path": ["null", "/no/such/config.json", *HF_FILES],
    "hardware.memory_gib": ["80", "1", "0", "-1"],
    "hardware.memory_bandwidth_tbps": ["3.35", "0"],
    "hardware.interconnect_bandwidth_gbps": ["0", "450"],
    "hardware.max_gpus_per_node": ["8", "1", "0"],
    "hardware.peak_tflops.bf16": ["989", "0", "-1"],
    "+hardware.peak_tflops.fp7": ["1"],
    "deployment.router": ["round_robin", "weighted_round_robin", "cache_aware", "kv_free", "''"],
    "deployment.prefill_router": ["least_outstanding", "cache_aware", "kv_free"],
    "deployment.decode_router": ["kv_free", "round_robin", "cache_aware"],
    "deployment.cache_aware.lag_s": ["0", "0.5", "-1", "nan"],
    "deployment.cache_aware.prefix_weight": ["0", "3", "-1"],
    "+deployment.pools.extra": ["{role:decode,tp:1}", "{role:prefill,tp:2,replicas:0}",
                                "{role:colocated,hardware:h200}", "{tp:abc}", "7"],
    "precision.weight_dtype": ["bf16", "fp8", "int4", "bogus"],
    "precision.activation_dtype": ["bf16", "fp8", "int8", "bogus"],
    "precision.kv_cache_dtype": ["auto", "fp8", "bf16", "int3"],
    "precision.quantization_group_size": ["128", "0"],
    "cost.gemm_efficiency": ["0.7", "1.0", "0", "1.5", "-1"],
    "cost.memory_efficiency": ["0.85", "0"],
    "cost.step_overhead_ms": ["2", "0", "-1"],
    "slo.ttft_s": ["2", "0", "-1"],
    "slo.e2e_s": ["null", "10", "0"],
    "output.write_steps": ["true", "false"],
    "~workload.rate": [""],
    "+workload.rat": ["1"],
    "workload.prompt_tokens": ["null", "5"],
}
for side in ("prompt_tokens", "output_tokens"):
    KEY_VALUES |= {
        f"workload.{side}.kind": ["fixed", "uniform", "lognormal", "normal", "exponential", "zipf"],
        f"workload.{side}.value": ["null", *TOKENS, "0", "-4"],
        f"workload.{side}.low": ["null", "1", "50", "0"],
        f"workload.{side}.high": ["null", "10", "300", "0"],
        f"workload.{side}.mean": ["null", "100", "1000", "0", "-5"],
        f"workload.{side}.std": ["null", "0", "50", "-1"],
        f"workload.{side}.min": ["1", "16", "0", "-1"],
        f"workload.{side}.max": ["null", "64", "2048", "0"],
    }
KEYS = sorted(KEY_VALUES)

overrides = st.lists(
    st.sampled_from(KEYS).flatmap(
        lambda key: st.sampled_from(KEY_VALUES[key]).map(
            lambda value: f"{key}={value}" if key[0] != "~" else key
        )
    ),
    max_size=5,
)
# A value of the wrong kind for any key: strings where numbers go, NaN, huge, nested.
odd_numbers = st.tuples(st.sampled_from(KEYS), st.sampled_from(NUMBERS)).map(
    lambda kv: f"{kv[0].lstrip('+~')}={kv[1]}"
)

@functools.lru_cache(maxsize=None)
def _base(choices: tuple[str, ...]):
    try:
        return compose_config([*choices, *QUIET])
    except (HydraException, OmegaConfBaseException) as err:
        return err


def _compose(choices: tuple[str, ...], drawn: list[str], full: bool):
    """The config `python -m sim <choices> <drawn>` would see, or the error Hydra raises."""
    drawn = [o for o in drawn if o != "workload.num_requests=null"]  # a trace could replay 19k requests
    tiny = ["workload.num_requests=20"] if not any(o.startswith("workload.num_requests") for o in drawn) else []
    if full:
        return compose_config([*choices, *QUIET, *tiny, *drawn])
    base = _base(choices)
    if isinstance(base, Exception):
        raise base
    cfg = copy.deepcopy(base)
    parsed = OverridesParser.create().parse_overrides([*tiny, *drawn])
    ConfigLoaderImpl._apply_overrides_to_config(parsed, cfg)
    return cfg


def check_one(tmp_path: Path, choices: tuple[str, ...], drawn: list[str], full: bool = False) -> str:
    """Compose, build and run; return "ran" or the error's message (asserted clear)."""
    try:
        cfg = _compose(choices, drawn, full)
    except (HydraException, OmegaConfBaseException) as err:
        message = str(err) + str(err.__cause__ or "")
        assert message.strip(), f"{choices} {drawn}: empty Hydra error"
        return f"Hydra: {message}"
    try:
        spec = build_run_spec(cfg)
        result = simulate(spec, tmp_path, resolved_config(cfg))
    except SimError as err:
        message = str(err)
        assert message.strip() and "\n" not in message.strip(), f"{choices} {drawn}: {message!r}"
        assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp")), "a failed run left half-written files"
        return f"{type(err).__name__}: {message}"
    counts = result.summary["requests"]
    assert counts["finished"] + counts["rejected"] + counts["unfinished"] == counts["arrived"] <= 20
    assert json.loads((tmp_path / "manifest.json").read_text())["complete"]
    return "ran"


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    choices=st.sampled_from(BASES),
    drawn=st.tuples(overrides, st.sampled_from([0, 0, 0, 1]).flatmap(
        lambda k: st.lists(odd_numbers, min_size=k, max_size=k))).map(lambda t: t[0] + t[1]),
    n=st.integers(0, 10**9),
)
def test_random_overrides_run_or_fail_with_a_clear_message(tmp_path, choices, drawn, n):
    outcome = check_one(tmp_path / str(n), choices, drawn)
    event(outcome.split(":")[0])  # ran, Hydra, ConfigError, TraceError, ... (--hypothesis-show-statistics)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(choices=st.sampled_from(BASES[:6]), drawn=overrides, n=st.integers(0, 10**9))
def test_full_hydra_composition_agrees(tmp_path, choices, drawn, n):
    """The fast path (overrides applied to a composed base) behaves as a full composition."""
    fast = check_one(tmp_path / f"{n}a", choices, drawn)
    full = check_one(tmp_path / f"{n}b", choices, drawn, full=True)
    assert (fast == "ran") == (full == "ran"), (fast, full)


def test_the_fuzzer_reaches_both_outcomes(tmp_path):
    """Sanity: the pools hold valid runs and each kind of refusal."""
    assert check_one(tmp_path / "a", (), ["scheduler.max_num_seqs=4"]) == "ran"
    assert "max_num_seqs" in check_one(tmp_path / "b", (), ["scheduler.max_num_seqs=0"])
    assert "max_num_seqs" in check_one(tmp_path / "c", (), ["scheduler.max_num_seqs=abc"])
    assert "rate" in check_one(tmp_path / "d", (), ["workload.rate=nan"])
    assert "no_such_model" in check_one(tmp_path / "e", ("model=no_such_model",), [])
    bad_trace = [f"workload.trace={TRACE_FILES[1]}", "workload.trace_format=azure"]
    assert check_one(tmp_path / "f", ("workload=azure_code",), bad_trace).startswith("TraceError")
