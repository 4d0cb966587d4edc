"""What one GPU's memory holds before any KV cache: the capacity CUDA reports, the CUDA context,
and the memory kernels take outside PyTorch's allocator.

    python3 calibration/measure_memory.py --out-dir $OUT [--prefix h200]

vLLM sizes its KV cache from `torch.cuda.mem_get_info()`'s total (not nvidia-smi's), times
gpu_memory_utilization, less the weights, the peak of PyTorch's allocations during a profiling
forward pass, and the non-torch memory that pass added (cuBLAS/cuBLASLt workspaces, NCCL and
custom all-reduce buffers at TP > 1): `vllm/v1/worker/gpu_worker.py`,
`determine_available_memory`, and `vllm/utils/mem_utils.py`, `memory_profiling`. This measures
the first two quantities exactly and the third for the kernels PyTorch has (cuBLAS GEMMs of
Llama-3.1-8B's shapes at 8,192 tokens, FlashAttention through SDPA), on one GPU: no NCCL.

Writes `<prefix>_memory.json`: bytes as integers, nvidia-smi's figures in MiB as it prints them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess

SMI_FIELDS = "memory.total,memory.reserved,memory.used,memory.free"


def smi() -> dict[str, int]:
    """nvidia-smi's memory figures of GPU 0, MiB."""
    out = subprocess.run(
        ["nvidia-smi", f"--query-gpu={SMI_FIELDS}", "--format=csv,noheader,nounits", "-i", "0"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    return {k.split(".")[1] + "_mib": int(v) for k, v in zip(SMI_FIELDS.split(","), out.split(", "))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", default=os.environ.get("OUT", "."))
    parser.add_argument("--prefix", default="h200")
    args = parser.parse_args()
    before = smi()  # no CUDA context yet
    import torch
    import torch.nn.functional as F

    torch.cuda.init()
    torch.empty(1, device="cuda")  # the context exists from here on
    free, total = torch.cuda.mem_get_info()
    after_init = smi()
    props = torch.cuda.get_device_properties(0)

    def non_torch_bytes() -> int:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        free_now, total_now = torch.cuda.mem_get_info()
        return total_now - free_now - torch.cuda.memory_reserved()

    baseline = non_torch_bytes()
    # A profiling-like pass: Llama-3.1-8B's GEMMs at 8,192 tokens, and causal attention.
    tokens, hidden, inter, heads, kv_heads, head_dim = 8192, 4096, 14336, 32, 8, 128
    bf16 = torch.bfloat16
    x = torch.randn(tokens, hidden, device="cuda", dtype=bf16)
    for n in (hidden + 2 * kv_heads * head_dim, hidden, 2 * inter, 128256):
        w = torch.randn(hidden, n, device="cuda", dtype=bf16)
        (x @ w).sum().item()
        del w
    w2 = torch.randn(inter, hidden, device="cuda", dtype=bf16)
    (torch.randn(tokens, inter, device="cuda", dtype=bf16) @ w2).sum().item()
    q = torch.randn(1, heads, tokens, head_dim, device="cuda", dtype=bf16)
    k = torch.randn(1, heads, tokens, head_dim, device="cuda", dtype=bf16)
    F.scaled_dot_product_attention(q, k, k, is_causal=True).sum().item()
    del x, w2, q, k
    after_pass = non_torch_bytes()
    result = {
        "gpu": props.name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_total_bytes": total,
        "cuda_total_gib": total / 2**30,
        "device_properties_total_bytes": props.total_memory,
        "cuda_free_after_init_bytes": free,
        "context_bytes": total - free,  # everything in use once the context exists (one tensor of 1)
        "non_torch_after_init_bytes": baseline,
        "non_torch_increase_bytes": after_pass - baseline,  # what vLLM's profiling would count
        "nvidia_smi_before_init": before,
        "nvidia_smi_after_init": after_init,
    }
    path = os.path.join(args.out_dir, f"{args.prefix}_memory.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
