"""Block sizes of vLLM 0.24.0's fused_moe: its tuned tables where it ships one, else its
defaults (`vllm/model_executor/layers/fused_moe/fused_moe.py`, `try_get_optimal_moe_config`).

vLLM looks for `configs/E=<E>,N=<N>,device_name=<GPU>[,dtype=...][,block_shape=...].json`,
E the experts on this GPU, N the expert width on it (w2's input), and takes the entry whose M
(tokens entering the layer) is nearest; without a file, `get_default_config`. Only the block
sizes matter to the cost model (padding, tile shape, bytes in flight), so only they are kept,
and only for the shapes measured here (calibration/measure_fused_moe_mla.py runs the same).

DIVERGENCE: vLLM ships tuned tables for many more (E, N, GPU) than these three; every other
shape gets the defaults, which on H200 run a bf16 prefill about 2x slower than a tuned table
(Qwen3-30B-A3B, 8k tokens: calibration/check_moe_mla.py).
"""

from __future__ import annotations

# (hardware, E, N, dtype) -> {M: (BLOCK_SIZE_M, BLOCK_SIZE_N, BLOCK_SIZE_K)}
TUNED = {
    # E=128,N=768,device_name=NVIDIA_H200.json (Qwen3-30B-A3B, bf16)
    ("h200", 128, 768, "bf16"): {
        1: (16, 64, 64), 2: (16, 64, 64), 4: (16, 64, 128), 8: (16, 64, 128), 16: (16, 64, 256),
        24: (16, 64, 128), 32: (16, 64, 128), 48: (16, 128, 128), 64: (16, 256, 128),
        96: (16, 128, 128), 128: (16, 128, 128), 256: (32, 256, 128), 512: (64, 128, 64),
        1024: (128, 256, 64), 1536: (128, 256, 64), 2048: (128, 256, 64), 3072: (128, 256, 64),
        4096: (128, 256, 64),
    },
    # E=32,N=2048,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128,128].json
    # (DeepSeek-V3 at EP8); BLOCK_K 256 entries run at 128, the scale group
    ("h200", 32, 2048, "fp8"): {
        **{m: (16, 128, 128) for m in (1, 2, 4, 8, 16, 24, 32, 48)},
        **{m: (64, 128, 128) for m in (64, 96, 128, 256, 512, 1024, 1536, 2048, 3072, 4096)},
    },
    # E=256,N=256,device_name=NVIDIA_H200,dtype=fp8_w8a8,block_shape=[128,128].json
    # (DeepSeek-V3 at TP8, every expert split 8 ways)
    ("h200", 256, 256, "fp8"): {
        **{m: (16, 128, 128) for m in (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256, 512)},
        **{m: (64, 128, 128) for m in (1024, 1536, 2048, 3072, 4096)},
    },
}  # fmt: skip


def fused_moe_blocks(hardware: str, tokens: int, local_experts: int, width: int, dtype: str) -> tuple[int, int, int]:
    """(BLOCK_SIZE_M, BLOCK_SIZE_N, BLOCK_SIZE_K) vLLM runs for `tokens` over `local_experts`
    experts of `width` (intermediate per GPU) in `dtype`."""
    table = TUNED.get((hardware, local_experts, width, dtype))
    if table:
        return table[min(table, key=lambda m: abs(m - tokens))]
    if dtype == "fp8":  # get_default_config, block-quantised W8A8: N and K by the scale group
        return 64, 128, 128
    return (16, 32, 64) if tokens <= local_experts else (64, 64, 32)  # M <= E: small tiles
