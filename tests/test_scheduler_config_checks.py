"""vLLM's SchedulerConfig checks (vllm/config/scheduler.py, verify_max_model_len) at the
config boundary: what vLLM refuses is refused, what it accepts still runs."""

from __future__ import annotations

import logging

import pytest

from sim.config.build import build_run_spec
from sim.config.checks import verify_scheduler_config
from sim.errors import ConfigError
from conftest import compose_config


def test_a_token_budget_below_max_num_seqs_is_refused_as_vllm_does():
    cfg = compose_config(["scheduler.max_num_batched_tokens=64", "scheduler.max_num_seqs=128"])
    with pytest.raises(ConfigError, match=r"max_num_batched_tokens \(64\) must be >= scheduler.max_num_seqs \(128\)"):
        build_run_spec(cfg)


def test_a_token_budget_below_the_block_size_is_accepted_as_vllm_does():
    spec = build_run_spec(compose_config([
        "scheduler.max_num_batched_tokens=8", "scheduler.max_num_seqs=8", "scheduler.block_size=16",
    ]))
    assert spec.scheduler.max_num_batched_tokens == 8


def test_budget_equal_to_max_num_seqs_is_fine():
    verify_scheduler_config(256, 256, 8192, True)


def test_without_chunked_prefill_the_budget_must_hold_a_whole_sequence():
    with pytest.raises(ConfigError, match="chunked prefill off"):
        verify_scheduler_config(4096, 256, 8192, False)
    verify_scheduler_config(8192, 256, 8192, False)


@pytest.mark.parametrize("key", ["max_num_batched_tokens", "max_num_seqs"])
def test_counts_below_one_are_refused(key):
    args = {"max_num_batched_tokens": 8192, "max_num_seqs": 256, key: 0}
    with pytest.raises(ConfigError, match=f"scheduler.{key}=0 must be at least 1"):
        verify_scheduler_config(args["max_num_batched_tokens"], args["max_num_seqs"], 8192, True)


def test_a_budget_beyond_every_sequence_is_a_warning_not_an_error(caplog):
    with caplog.at_level(logging.WARNING, logger="sim.config.checks"):
        verify_scheduler_config(100_000, 2, 1024, True)
    assert "exceeds max_num_seqs * max_model_len (2048)" in caplog.text
