"""vLLM's batch-size defaults for `vllm serve`, per GPU.

Matched: vLLM 0.24.0 `vllm/engine/arg_utils.py`, `EngineArgs.get_batch_defaults` and
`_set_default_max_num_seqs_and_batched_tokens_args`, usage context OPENAI_API_SERVER. vLLM
reads the device's total memory as CUDA reports it (`get_device_total_memory`) and its name:
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.hardware_spec import HardwareSpec

LARGE_GPU_GIB = 70.0  # device memory from which the larger defaults apply (not A100)


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_num_seqs: int
    max_num_batched_tokens: int
    source: str


def batch_limits(
    hardware: HardwareSpec,
    max_num_seqs: int | None,
    max_num_batched_tokens: int | None,
    max_model_len: int,
    enable_chunked_prefill: bool,
) -> BatchLimits:
    """The limits a run uses: the ones given, else vLLM's defaults for this GPU."""
    memory_gib = hardware.memory_bytes / 2**30
    large = memory_gib >= LARGE_GPU_GIB and "a100" not in hardware.name.lower()
    default_seqs, default_tokens = (1024, 8192) if large else (256, 2048)
    rule = (
        f"vLLM 0.24.0 `vllm serve` defaults for a GPU with {memory_gib:.1f} GiB"
        f" ({'>= 70 GiB, not A100' if large else '< 70 GiB or A100'}):"
        f" {default_seqs} sequences, {default_tokens} batched tokens"
    )
    tokens = max_num_batched_tokens
    if tokens is None:
        tokens = default_tokens
        if not enable_chunked_prefill:
            tokens = max(max_model_len, tokens)
        seqs_for_cap = max_num_seqs if max_num_seqs is not None else default_seqs
        tokens = min(seqs_for_cap * max_model_len, tokens)
    seqs = max_num_seqs
    if seqs is None:
        seqs = min(default_seqs, tokens)
    given = [
        name
        for name, value in (("max_num_seqs", max_num_seqs), ("max_num_batched_tokens", max_num_batched_tokens))
        if value is not None
    ]
    source = rule if not given else f"{', '.join(given)} set in the config; otherwise {rule}"
    if len(given) == 2:
        source = "max_num_seqs and max_num_batched_tokens set in the config"
    return BatchLimits(seqs, tokens, source)
