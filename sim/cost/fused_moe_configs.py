"""Kernel configs of vLLM 0.24.0's fused_moe: its tuned tables where it ships one, else its
defaults (`vllm/model_executor/layers/fused_moe/fused_moe.py`, `try_get_optimal_moe_config`).

vLLM looks for `configs/E=<E>,N=<N>,device_name=<GPU>[,dtype=...][,block_shape=...].json`,
E the experts on this GPU, N the expert width on it (w2's input), and takes the entry whose M
(tokens entering the layer) is nearest; without a file, `get_default_config`. The cost model
uses the block sizes (padding, tile shape, bytes in flight); the kernel timings of
calibration/measure_fused_moe_mla.py launch the whole config, from this one table.

DIVERGENCE: vLLM ships tuned tables for many more (E, N, GPU) than these three; every other
shape gets the defaults, which on H200 run a bf16 prefill about 2x slower than a tuned table
(Qwen3-30B-A3B, 8k tokens: calibration/check_moe_mla.py).
"""

from __future__ import annotations

# (hardware, E, N, dtype) -> {M: (BLOCK_SIZE_M, BLOCK_SIZE_N, BLOCK_SIZE_K, GROUP_SIZE_M,
# num_warps, num_stages)}
TUNED = {
    # E=128,N=768,device_name=NVIDIA_H200.json (Qwen3-30B-A3B, bf16)
    ("h200", 128, 768, "bf16"): {
        1: (16, 64, 64, 1, 4, 5), 2: (16, 64, 64, 1, 4, 4), 4: (16, 64, 128, 16, 4, 2),
        8: (16, 64, 128, 1, 4, 3), 16: (16, 64, 256, 1, 4, 2), 24: (16, 64, 128, 1, 4, 4),
        32: (16, 64, 128, 16, 4, 2), 48: (16, 128, 128, 16, 4, 3), 64: (16, 256, 128, 1, 8, 2),
        96: (16, 128, 128, 1, 4, 2), 128: (16, 128, 128, 1, 4, 2),
        256: (32, 256, 128, 16, 4, 2), 512: (64, 128, 64, 1, 4, 3),
        1024: (128, 256, 64, 16, 8, 4), 1536: (128, 256, 64, 1, 8, 4),
        2048: (128, 256, 64, 1, 8, 4), 3072: (128, 256, 64, 1, 8, 4),
        4096: (128, 256, 64, 16, 8, 4),
    },
    # E=32,N=2048,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128,128].json
    # (DeepSeek-V3 at EP8); BLOCK_K 256 entries run at 128, the scale group
    ("h200", 32, 2048, "fp8"): {
        1: (16, 128, 128, 1, 4, 4), 2: (16, 128, 128, 1, 4, 3), 4: (16, 128, 128, 1, 8, 3),
        8: (16, 128, 128, 1, 4, 3), 16: (16, 128, 128, 1, 4, 3), 24: (16, 128, 128, 1, 4, 3),
        32: (16, 128, 128, 1, 4, 3), 48: (16, 128, 128, 1, 4, 4), 64: (64, 128, 128, 1, 4, 4),
        96: (64, 128, 128, 1, 4, 4), 128: (64, 128, 128, 1, 4, 4),
        256: (64, 128, 128, 64, 4, 4), 512: (64, 128, 128, 16, 4, 4),
        1024: (64, 128, 128, 1, 4, 4), 1536: (64, 128, 128, 1, 4, 3),
        2048: (64, 128, 128, 1, 4, 3), 3072: (64, 128, 128, 32, 4, 3),
        4096: (64, 128, 128, 64, 4, 3),
    },
    # E=256,N=256,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128,128].json
    # (DeepSeek-V3 at TP8, every expert split 8 ways)
    ("h200", 256, 256, "fp8"): {
        1: (16, 128, 128, 16, 4, 4), 2: (16, 128, 128, 16, 4, 4), 4: (16, 128, 128, 64, 4, 4),
        8: (16, 128, 128, 16, 4, 4), 16: (16, 128, 128, 16, 4, 3), 24: (16, 128, 128, 16, 4, 4),
        32: (16, 128, 128, 16, 4, 5), 48: (16, 128, 128, 64, 4, 3),
        64: (16, 128, 128, 64, 4, 3), 96: (16, 128, 128, 16, 4, 3),
        128: (16, 128, 128, 32, 4, 3), 256: (16, 128, 128, 32, 4, 3),
        512: (16, 128, 128, 16, 4, 3), 1024: (64, 128, 128, 32, 4, 4),
        1536: (64, 128, 128, 32, 4, 4), 2048: (64, 128, 128, 32, 4, 4),
        3072: (64, 128, 128, 32, 4, 4), 4096: (64, 128, 128, 16, 4, 3),
    },
}  # fmt: skip


def fused_moe_config(hardware: str, tokens: int, local_experts: int, width: int, dtype: str) -> tuple[int, ...]:
    """(BLOCK_SIZE_M, BLOCK_SIZE_N, BLOCK_SIZE_K, GROUP_SIZE_M, num_warps, num_stages) vLLM
    runs for `tokens` over `local_experts` experts of `width` (intermediate per GPU) in `dtype`."""
    table = TUNED.get((hardware, local_experts, width, dtype))
    if table:
        return table[min(table, key=lambda m: abs(m - tokens))]
    if dtype == "fp8":  # get_default_config, block-quantised W8A8: N and K by the scale group
        return 64, 128, 128, 32, 4, 3
    # get_default_config for 16-bit weights (Triton's default num_warps 4, num_stages 3); M <= E:
    # small tiles
    return (16, 32, 64, 1, 4, 3) if tokens <= local_experts else (64, 64, 32, 8, 4, 3)


def fused_moe_blocks(hardware: str, tokens: int, local_experts: int, width: int, dtype: str) -> tuple[int, int, int]:
    """(BLOCK_SIZE_M, BLOCK_SIZE_N, BLOCK_SIZE_K) of `fused_moe_config`."""
    block_m, block_n, block_k = fused_moe_config(hardware, tokens, local_experts, width, dtype)[:3]
    return block_m, block_n, block_k
