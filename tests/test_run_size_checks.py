"""Sizes that could never run are refused before anything is allocated: a KV cache that only
holds vLLM's null block, block counts or replica counts past what the simulator can hold,
and memory beyond any accelerator."""

from __future__ import annotations

import pytest

from sim.config.build import build_run_spec
from sim.config.checks import MAX_TOTAL_KV_BLOCKS, verify_kv_cache
from sim.errors import ConfigError, DoesNotFitError
from conftest import compose_config


def test_one_block_is_only_the_null_block():
    cfg = compose_config(["scheduler.num_gpu_blocks_override=1", "scheduler.max_model_len=16"])
    with pytest.raises(DoesNotFitError, match="null block, and none to give"):
        build_run_spec(cfg)


def test_two_blocks_hold_one_sequence_of_one_block():
    spec = build_run_spec(compose_config([
        "scheduler.num_gpu_blocks_override=2", "scheduler.max_model_len=16",
        "scheduler.max_num_batched_tokens=256", "scheduler.max_num_seqs=16",
    ]))
    assert spec.memory.num_gpu_blocks == 2


@pytest.mark.parametrize("overrides, fragment", [
    (["scheduler.num_gpu_blocks_override=1000000000"], "vLLM could not allocate it. At most 32,148 blocks fit"),
    (["scheduler.num_gpu_blocks_override=40000000", "hardware.memory_gib=65536", "scheduler.block_size=1"],
     "1 replica(s) x 40,000,000 KV blocks"),
    (["parallel.replicas=100000"], "100,000 replica(s)"),
    (["hardware.memory_gib=1e30"], "memory_gib=1e+30 is beyond any accelerator"),
])
def test_sizes_past_what_could_run_are_refused(overrides, fragment):
    with pytest.raises(ConfigError) as info:
        build_run_spec(compose_config(overrides))
    assert fragment in str(info.value)


def test_the_bound_is_on_all_replicas_together():
    verify_kv_cache(MAX_TOTAL_KV_BLOCKS // 4, 4)
    with pytest.raises(ConfigError, match="more than the simulator can hold"):
        verify_kv_cache(MAX_TOTAL_KV_BLOCKS // 4 + 1, 4)
