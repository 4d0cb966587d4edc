"""Attention kernels alone, through torch.nn.functional.scaled_dot_product_attention (bf16,
head_dim 128): causal prefill and single-token decode, with grouped-query attention at the
per-GPU head counts of TP1/TP4/TP8 deployments. See calibration/README.md.

  python3 calibration/measure_attention.py --out-dir $OUT
  python3 calibration/measure_attention.py --tiny --out-dir /tmp/calib    # CPU smoke test
"""

from __future__ import annotations

import argparse
import math
import os

import torch
import torch.nn.functional as F

from calib_common import Budget, RowWriter, bench, describe_device, free_cuda_memory
from calib_common import hardware_name, l2_bytes, machine_facts

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # pragma: no cover
    SDPBackend = sdpa_kernel = None

# (q heads, kv heads) on one GPU, and the deployment that has them.
HEADS = [(32, 8, "llama3_8b tp1"), (28, 4, "qwen2_7b tp1"), (16, 2, "llama3_70b tp4"),
         (8, 1, "llama3_70b tp8"), (8, 2, "llama3_8b tp4")]
PREFILL = [(1, 512), (1, 1024), (1, 2048), (1, 4096), (1, 8192), (1, 16384), (4, 1024), (8, 512)]
DECODE_BATCH = [1, 4, 16, 64, 256]
DECODE_CTX = [1024, 4096, 16384]

COLUMNS = [
    "phase", "variant", "batch", "ctx", "q_heads", "kv_heads", "head_dim", "deployment", "ms",
    "tflops", "gbps", "flops", "bytes", "copies", "spread", "hardware", "gpu", "driver", "torch",
    "cuda", "sm_clock_mhz", "mem_clock_mhz",
]


def backend(name):
    if SDPBackend is None or not torch.cuda.is_available():
        import contextlib

        return contextlib.nullcontext()
    return sdpa_kernel([{"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                         "efficient": SDPBackend.EFFICIENT_ATTENTION}[name]])


def rand(*shape, dev):
    return torch.randn(*shape, device=dev, dtype=torch.bfloat16)


def prefill_fns(b, s, hq, hkv, d, dev):
    """variant -> closure. flash reads the GQA KV heads directly; cudnn and efficient get the
    KV heads repeated to hq beforehand (that copy is not timed; they lack GQA in PyTorch)."""
    q, k, v = rand(b, hq, s, d, dev=dev), rand(b, hkv, s, d, dev=dev), rand(b, hkv, s, d, dev=dev)
    kx, vx = k.repeat_interleave(hq // hkv, 1), v.repeat_interleave(hq // hkv, 1)

    def make(name, kk, vv, gqa):
        def fn():
            with backend(name):
                return F.scaled_dot_product_attention(q, kk, vv, is_causal=True, enable_gqa=gqa)
        return fn
    return {"flash": make("flash", k, v, hq != hkv), "cudnn": make("cudnn", kx, vx, False),
            "efficient": make("efficient", kx, vx, False)}


def decode_fns(b, ctx, hq, hkv, d, dev, copies):
    """variant -> closure over `copies` KV sets (one call each, so no call finds its KV in L2).
    flash_gqa: q [B, Hq, 1, D] with enable_gqa (PyTorch's flash swaps the group into the query
    length itself); *_packed: q [B, Hkv, G, D], the G query heads of a KV head as its rows."""
    g = hq // hkv
    kv = rand(copies, 2, b, hkv, ctx, d, dev=dev)
    q1 = rand(b, hq, 1, d, dev=dev)
    qp = q1.view(b, hkv, g, d)

    def make(name, q, gqa):
        def fn():
            with backend(name):
                for c in range(copies):
                    F.scaled_dot_product_attention(q, kv[c, 0], kv[c, 1], enable_gqa=gqa)
        return fn
    return {"flash_gqa": make("flash", q1, g > 1), "flash_packed": make("flash", qp, False),
            "efficient_packed": make("efficient", qp, False), "cudnn_packed": make("cudnn", qp, False)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", default=os.environ.get("OUT", "calibration/data"))
    p.add_argument("--prefix", default=None)
    p.add_argument("--budget-s", type=float, default=100.0)
    p.add_argument("--reps", type=int, default=12)
    p.add_argument("--tiny", action="store_true")
    args = p.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    prefill, batches, ctxs, heads, d = PREFILL, DECODE_BATCH, DECODE_CTX, HEADS, 128
    if args.tiny:
        prefill, batches, ctxs, heads, d = [(1, 64), (2, 32)], [1, 4], [64, 256], HEADS[:3], 64
    facts = machine_facts()
    print(describe_device(), flush=True)
    out = RowWriter(os.path.join(args.out_dir, f"{args.prefix or hardware_name()}_attention.csv"),
                    COLUMNS)
    base = {"hardware": hardware_name(), "head_dim": d, **{k: facts[k] for k in
            ("gpu", "driver", "torch", "cuda")}}
    budget = Budget(args.budget_s)
    failures: dict[str, int] = {}

    def record(phase, variant, fn, fn_calls, b, ctx, hq, hkv, dep, flops, nbytes, copies):
        """Time fn (fn_calls SDPA calls) in a CUDA graph and write one row per call."""
        if failures.get(variant, 0) >= 2 or budget.spent():
            return
        try:
            fn()  # an eager probe first: a backend refusing the shape raises before launching
            inner = 4 if phase == "prefill" and b * ctx <= 2048 else 1
            tm = bench(fn, graph=True, warmup=3, reps=args.reps, inner=inner)
        except Exception as e:  # noqa: BLE001 - a backend refusing the shape or the capture
            print(f"  {phase} {variant} b={b} ctx={ctx} h={hq}/{hkv}: failed ({str(e)[:160]})")
            failures[variant] = failures.get(variant, 0) + 1
            return
        ms = tm.median / fn_calls
        out.write(dict(base, phase=phase, variant=variant, batch=b, ctx=ctx, q_heads=hq,
                       kv_heads=hkv, deployment=dep, ms=ms, tflops=flops / ms / 1e9,
                       gbps=nbytes / ms / 1e6, flops=flops, bytes=nbytes, copies=copies,
                       spread=tm.spread, sm_clock_mhz=tm.clocks.get("sm_clock_mhz", ""),
                       mem_clock_mhz=tm.clocks.get("mem_clock_mhz", "")))
        print(f"  {phase:7s} {variant:16s} b={b:<4d} ctx={ctx:<6d} h={hq}/{hkv}  {ms * 1e3:9.1f} us"
              f"  {flops / ms / 1e9:7.1f} TFLOP/s  {nbytes / ms / 1e6:7.0f} GB/s", flush=True)

    for b, s in prefill:
        for hq, hkv, dep in heads:
            flops = 4 * b * hq * d * s * (s + 1) / 2
            nbytes = b * s * (2 * hq + 2 * hkv) * d * 2
            for variant, fn in prefill_fns(b, s, hq, hkv, d, dev).items():
                record("prefill", variant, fn, 1, b, s, hq, hkv, dep, flops, nbytes, 1)
            free_cuda_memory()
    failures.clear()
    for b in batches:
        for ctx in ctxs:
            for hq, hkv, dep in heads:
                kv_bytes = 2 * b * hkv * ctx * d * 2
                copies = max(1, min(256, math.ceil(4 * l2_bytes() / kv_bytes)))
                flops = 4 * b * hq * d * ctx
                nbytes = kv_bytes + 2 * b * hq * d * 2
                for variant, fn in decode_fns(b, ctx, hq, hkv, d, dev, copies).items():
                    record("decode", variant, fn, copies, b, ctx, hq, hkv, dep, flops, nbytes,
                           copies)
                free_cuda_memory()
    print(f"wrote {out.count} attention rows; budget left {budget.left_s():.0f} s", flush=True)


if __name__ == "__main__":
    main()
