"""vLLM's own checks on the scheduler settings, and the size checks on the KV cache, applied
before a run is built.

Matched: vLLM 0.24.0 `vllm/config/scheduler.py`, `SchedulerConfig`: the field bounds
(`max_num_batched_tokens` and `max_num_seqs` are `Field(ge=1)`) and
`SchedulerConfig.verify_max_model_len`, which `__post_init__` calls. Of its checks, those on
settings this simulator has are applied as vLLM applies them: the ones on
`max_num_partial_prefills` and `max_long_partial_prefills` do not apply (both are fixed at
vLLM's default of 1 here), and vLLM's warning is logged as a warning. vLLM's SchedulerConfig
has no check of `max_num_batched_tokens` against the KV block size, so none is made: a token
budget smaller than a block is valid there (a prompt is then computed in several chunks).
"""

from __future__ import annotations

import logging

from sim.errors import ConfigError, DoesNotFitError

log = logging.getLogger(__name__)


def verify_scheduler_config(
    max_num_batched_tokens: int, max_num_seqs: int, max_model_len: int, enable_chunked_prefill: bool
) -> None:
    """Raise ConfigError where vLLM's SchedulerConfig raises ValueError; warn where it warns."""
    for key, value in (("max_num_batched_tokens", max_num_batched_tokens), ("max_num_seqs", max_num_seqs)):
        if value < 1:
            raise ConfigError(f"scheduler.{key}={value} must be at least 1 (vLLM: Field(ge=1))")
    if max_num_batched_tokens < max_model_len and not enable_chunked_prefill:
        raise ConfigError(
            f"with chunked prefill off, scheduler.max_num_batched_tokens ({max_num_batched_tokens})"
            f" must be >= max_model_len ({max_model_len}), or a long prompt could never be"
            " scheduled; raise it, lower scheduler.max_model_len, or set"
            " scheduler.enable_chunked_prefill=true"
        )
    if max_num_batched_tokens < max_num_seqs:
        raise ConfigError(
            f"scheduler.max_num_batched_tokens ({max_num_batched_tokens}) must be >= "
            f"scheduler.max_num_seqs ({max_num_seqs}), as vLLM requires: a step could not give "
            "every running request its one decode token; raise the first or lower the second"
        )
    if max_num_batched_tokens > max_num_seqs * max_model_len:
        log.warning(
            "scheduler.max_num_batched_tokens (%d) exceeds max_num_seqs * max_model_len (%d); "
            "vLLM warns that this may lead to unexpected behaviour",
            max_num_batched_tokens, max_num_seqs * max_model_len,
        )


# The most KV blocks the simulator holds, all replicas together. Each block costs the block
# pool up to ~120 bytes of Python state (reference count, hash slot, an entry of the LRU
# free queue), so this is about 4 GB of simulator memory; past it a run would exhaust the
# machine before its first step. Real deployments of thousands of GPUs fit (1,000 replicas of
# Llama-3.1-8B on an H100 hold about 30 million blocks).
MAX_TOTAL_KV_BLOCKS = 2**25


def verify_kv_cache(num_gpu_blocks: int, num_replicas: int) -> None:
    """The planned KV cache has a block to give besides vLLM's null block, and the simulator
    can hold every replica's block pool."""
    # vLLM's BlockPool reserves block 0 as the null block (vllm/v1/core/block_pool.py), so a
    # pool of N blocks hands out N - 1. Like vLLM, a cache smaller than one max_model_len
    # sequence plus that block still runs: requests too large for it are rejected.
    if num_gpu_blocks < 2:
        raise DoesNotFitError(
            f"the KV cache has {num_gpu_blocks} block, vLLM's reserved null block, and none to"
            " give to a request; raise scheduler.num_gpu_blocks_override to at least 2"
        )
    total = num_gpu_blocks * num_replicas
    if total > MAX_TOTAL_KV_BLOCKS:
        raise ConfigError(
            f"{num_replicas:,} replica(s) x {num_gpu_blocks:,} KV blocks = {total:,} blocks, more"
            f" than the simulator can hold (at most {MAX_TOTAL_KV_BLOCKS:,}, about 4 GB of its"
            " memory); simulate fewer replicas (parallel.replicas) and scale the result, or set"
            " scheduler.num_gpu_blocks_override lower"
        )
