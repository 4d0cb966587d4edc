"""Speculative-decoding verify steps on one GPU: the target's forward over 1 + k tokens per
request at decode batch sizes, and one pass of an EAGLE-style one-layer head.

    python calibration/measure_spec_verify.py --out calibration/data/h200_spec_verify.csv

The model is `calib_model.Decoder` (Llama-shaped, random bf16 weights, compiled element-wise
kernels, cuBLAS GEMMs), each step replayed from a CUDA graph, as the other step sweeps of
this folder. A verify step of batch B and q = 1 + k tokens per request:
- every linear layer and the LM head run over all B x q rows (vLLM computes the target's
  logits at each draft position for the rejection sampler);
- attention: the q new tokens' K/V are written at positions ctx .. ctx+q-1, then each
  request's q x G query rows (G query heads per KV head, packed as FlashAttention packs them)
  attend to its ctx + q cached tokens with PyTorch's FlashAttention kernel, so each request's
  KV is read once. The triangle among the q new tokens is not masked (q^2 of q x ctx pairs:
  under 0.2% at ctx 1024 for q <= 4): the timing is of a memory-bound kernel reading the KV.
q = 1 is a plain decode step on the same path. "head" rows time the drafter's later passes:
a one-layer model of the target's shapes, one token per request, with its LM head.

Rows are flushed one by one; the sweep stops at --budget-s.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
import torch.nn.functional as F

from calib_common import ARCHS, RowWriter, bench, describe_device, free_cuda_memory, hardware_name
from calib_model import Decoder, attention_context

COLUMNS = ["hardware", "model", "kind", "batch", "q", "ctx", "ms", "ms_min", "spread", "reps",
           "sm_clock_mhz", "mem_clock_mhz"]


def verify_attention(dec: Decoder, layer: int, q, k, v, batch: int, q_len: int, ctx: int, regions: int):
    """q [B*q, n_q, D], k/v [B*q, n_kv, D] -> [B*q, n_q*D], reading each request's KV once."""
    d, g, n_kv = dec.arch.head_dim, dec.group_size, dec.n_kv
    kc, vc = dec.kv_view(layer % regions, batch, ctx + q_len)
    kc[:, :, ctx:].copy_(k.view(batch, q_len, n_kv, d).transpose(1, 2))
    vc[:, :, ctx:].copy_(v.view(batch, q_len, n_kv, d).transpose(1, 2))
    qp = q.view(batch, q_len, n_kv, g, d).permute(0, 2, 1, 3, 4).reshape(batch, n_kv, q_len * g, d)
    with attention_context("flash"):
        o = F.scaled_dot_product_attention(qp, kc, vc)
    return o.view(batch, n_kv, q_len, g, d).permute(0, 2, 1, 3, 4).reshape(batch * q_len, dec.n_q * d)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="llama3_8b")
    p.add_argument("--batches", default="1,8,32,64,128,256")
    p.add_argument("--qs", default="1,2,4")
    p.add_argument("--ctx", default="1024,4096")
    p.add_argument("--budget-s", type=float, default=120.0)
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--out", default="calibration/data/h200_spec_verify.csv")
    p.add_argument("--no-compile", action="store_true", help="element-wise kernels eager (CPU smoke test)")
    args = p.parse_args()
    t0 = time.monotonic()
    arch = ARCHS[args.model]
    batches = [int(x) for x in args.batches.split(",")]
    qs = [int(x) for x in args.qs.split(",")]
    ctxs = [int(x) for x in args.ctx.split(",")]
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    need = max(batches) * (max(ctxs) + max(qs))
    per_token = 2 * arch.kv_heads * arch.head_dim * 2
    free = torch.cuda.mem_get_info()[0] if dev == "cuda" else 1 << 34
    room = free - 40 * 2**30  # weights (16 GB), activations, graphs
    full = max(need, min(need * arch.layers, room // per_token))
    print(describe_device(), flush=True)
    out = RowWriter(args.out, COLUMNS)
    base = {"hardware": hardware_name(), "model": args.model}
    for kind in ("verify", "head"):
        shapes = arch if kind == "verify" else dataclasses.replace(arch, layers=1)
        buf = full if kind == "verify" else need
        dec = Decoder(shapes, kv_buffer_tokens=buf, max_pos=max(ctxs) + max(qs) + 1, device=dev,
                      compile_elementwise=not args.no_compile)
        for ctx in ctxs:
            for q_len in (qs if kind == "verify" else [1]):
                for batch in batches:
                    if time.monotonic() - t0 > args.budget_s:
                        print("budget spent", flush=True)
                        return
                    regions = dec.kv_regions(batch * (ctx + q_len))
                    ids = torch.randint(0, arch.vocab, (batch * q_len,), device=dev)
                    pos = (ctx + torch.arange(q_len, device=dev)).repeat(batch)

                    def step():
                        return dec.forward(ids, pos, lambda i, q, k, v: verify_attention(
                            dec, i, q, k, v, batch, q_len, ctx, regions))
                    tm = bench(step, graph=dev == "cuda", warmup=3, reps=args.reps)
                    clocks = tm.clocks
                    out.write(dict(base, kind=kind, batch=batch, q=q_len, ctx=ctx, ms=tm.median,
                                   ms_min=min(tm.ms), spread=tm.spread, reps=len(tm.ms),
                                   sm_clock_mhz=clocks.get("sm_clock_mhz"),
                                   mem_clock_mhz=clocks.get("mem_clock_mhz")))
                    print(f"{kind} b={batch:<4d} q={q_len} ctx={ctx:<5d} {tm.median:8.3f} ms"
                          f" regions={regions}", flush=True)
                    free_cuda_memory()
        del dec
        free_cuda_memory()


if __name__ == "__main__":
    main()
