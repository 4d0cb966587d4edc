"""Achieved HBM bandwidth (large copy, read, write) and the small element-wise kernels of a
decoder step (add, RMSNorm, fused add+RMSNorm, SiLU-and-mul, RoPE) at various token counts,
both eager (unfused PyTorch ops) and compiled by Inductor (fused Triton kernels, as vLLM v1).

  python3 calibration/measure_bandwidth.py --out-dir $OUT
  python3 calibration/measure_bandwidth.py --tiny --out-dir /tmp/calib    # CPU smoke test
"""

from __future__ import annotations

import argparse
import os

import torch

from calib_common import ARCHS, Budget, RowWriter, bench, describe_device, free_cuda_memory
from calib_common import hardware_name, machine_facts
from calib_model import elementwise_fns, rope_tables

COLUMNS = [
    "kind", "op", "mode", "tokens", "width", "bytes", "ms", "gbps", "spread", "hardware", "gpu",
    "driver", "torch", "cuda", "sm_clock_mhz", "mem_clock_mhz",
]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", default=os.environ.get("OUT", "calibration/data"))
    p.add_argument("--prefix", default=None)
    p.add_argument("--budget-s", type=float, default=45.0)
    p.add_argument("--tiny", action="store_true")
    args = p.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    arch = ARCHS["tiny" if args.tiny else "llama3_8b"]
    copy_mib = [4, 16] if args.tiny else [64, 256, 1024, 4096]
    token_counts = [1, 8, 64] if args.tiny else [1, 8, 64, 256, 1024, 4096, 16384, 32768]
    facts = machine_facts()
    print(describe_device(), flush=True)
    out = RowWriter(os.path.join(args.out_dir, f"{args.prefix or hardware_name()}_bandwidth.csv"),
                    COLUMNS)
    base = {"hardware": hardware_name(), **{k: facts[k] for k in ("gpu", "driver", "torch", "cuda")}}
    budget = Budget(args.budget_s)

    def record(kind, op, mode, tokens, width, nbytes, fn, inner):
        if budget.spent():
            return
        tm = bench(fn, graph=True, warmup=3, reps=15, inner=inner)
        out.write(dict(base, kind=kind, op=op, mode=mode, tokens=tokens, width=width, bytes=nbytes,
                       ms=tm.median, gbps=nbytes / tm.median / 1e6, spread=tm.spread,
                       sm_clock_mhz=tm.clocks.get("sm_clock_mhz", ""),
                       mem_clock_mhz=tm.clocks.get("mem_clock_mhz", "")))
        print(f"  {kind:11s} {op:12s} {mode:8s} T={tokens:<6d} {tm.median * 1e3:10.1f} us "
              f"{nbytes / tm.median / 1e6:8.0f} GB/s", flush=True)

    # HBM: one large buffer each way (bf16; data random, never zeros)
    for mib in copy_mib:
        n = mib * 2**20 // 2
        src = torch.randn(n, device=dev, dtype=torch.bfloat16)
        dst = torch.empty_like(src)
        record("hbm", "copy", "torch", 0, n, 2 * n * 2, lambda: dst.copy_(src), 1)
        # the same bytes through an element-wise kernel (copy_ may use the copy engines)
        record("hbm", "copy_kernel", "torch", 0, n, 2 * n * 2,
               lambda: torch.add(src, 1.0, out=dst), 1)
        record("hbm", "read_sum", "torch", 0, n, n * 2, lambda: src.sum(dtype=torch.float32), 1)
        record("hbm", "write_fill", "torch", 0, n, n * 2, lambda: dst.fill_(0.5), 1)
        del src, dst
        free_cuda_memory()

    # element-wise kernels of a llama3_8b layer, eager and compiled
    h, f, d = arch.hidden, arch.ffn, arch.head_dim
    cos, sin = rope_tables(4096, d, dev)
    for compile_ in (True, False):
        fns, mode = elementwise_fns(arch, arch.heads, arch.kv_heads, compile_)
        for t in token_counts:
            if budget.spent():
                break
            x = torch.randn(t, h, device=dev, dtype=torch.bfloat16)
            r = torch.randn_like(x)
            w = torch.randn(h, device=dev, dtype=torch.bfloat16)
            gu = torch.randn(t, 2 * f, device=dev, dtype=torch.bfloat16)
            qkv = torch.randn(t, (arch.heads + 2 * arch.kv_heads) * d, device=dev,
                              dtype=torch.bfloat16)
            pos = torch.randint(0, 4096, (t,), device=dev)
            inner = 20 if t <= 4096 else 4
            if mode == "eager":
                record("elementwise", "add", mode, t, h, 3 * t * h * 2, lambda: x + r, inner)
            record("elementwise", "rmsnorm", mode, t, h, 2 * t * h * 2,
                   lambda: fns["rmsnorm"](x, w, 1e-5), inner)
            record("elementwise", "add_rmsnorm", mode, t, h, 4 * t * h * 2,
                   lambda: fns["add_rmsnorm"](x, r, w, 1e-5), inner)
            record("elementwise", "silu_mul", mode, t, f, 3 * t * f * 2,
                   lambda: fns["silu_mul"](gu), inner)
            record("elementwise", "rope", mode, t, (arch.heads + arch.kv_heads) * d,
                   2 * t * (arch.heads + arch.kv_heads) * d * 2,
                   lambda: fns["rope"](qkv, pos, cos, sin), inner)
            del x, r, gu, qkv
            free_cuda_memory()
    print(f"wrote {out.count} bandwidth rows; budget left {budget.left_s():.0f} s", flush=True)


if __name__ == "__main__":
    main()
