"""FP8 kernels alone on one GPU: FP8 GEMMs (torch._scaled_mm, per-tensor scales) beside bf16
at the same shapes, and paged attention over an FP8 or bf16 KV cache (calibration/fp8_attention.py,
the design of vLLM's Triton backend). See calibration/README.md, "FP8".

  python3 calibration/measure_fp8_kernels.py --out-dir $OUT [--prefix h200] [--budget-s 200]

GEMM (`<prefix>_fp8_gemm.csv`): y = x @ w for x [M, K], w [K, N]. bf16: `x @ w`. fp8:
torch._scaled_mm(x8, w8, scale_a, scale_b, out_dtype=bf16), x8 row-major and w8 column-major
float8_e4m3fn (cuBLASLt's layout), each with its per-tensor scale (amax / 448, computed from the
data, not 1.0). M below what cuBLASLt accepts is padded (m_run). Each figure: `calls` GEMMs,
each on its own copy of the weight (so every call streams its weight from HBM, enough copies to
exceed 3x L2), captured in one CUDA graph, median of 10 replays / calls: launch gaps as inside
an engine step's graph.

Attention (`<prefix>_fp8_attention.csv`): decode (one query per sequence, batch x ctx) and
prefill (batch x seq, causal) over a paged cache (page 16), kv_dtype bf16 or fp8 through the
same kernel; the query heads per GPU of Llama-3.1-8B TP1 and 70B TP4 / TP8. Each variant is
first checked against float32 attention on the same (dequantised) cache; a variant that fails
the check is not timed. Calls rotate over cache copies so no call finds its keys in L2.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics

import torch

from calib_common import Budget, RowWriter, describe_device, free_cuda_memory, hardware_name
from calib_common import l2_bytes, machine_facts, clocks

FP8_MAX = 448.0
# (K, N, name): projections of Llama-3.1-8B (TP1) and 70B at TP 1, 2, 4, 8 (vLLM's split:
# QKV and gate_up column-parallel, O and down row-parallel).
SHAPES = [(4096, 6144, "8b qkv"), (4096, 4096, "8b o"), (4096, 28672, "8b gate_up"),
          (14336, 4096, "8b down")]
for _tp in (1, 2, 4, 8):
    SHAPES += [(8192, 10240 // _tp, f"70b tp{_tp} qkv"), (8192 // _tp, 8192, f"70b tp{_tp} o"),
               (8192, 57344 // _tp, f"70b tp{_tp} gate_up"), (28672 // _tp, 8192, f"70b tp{_tp} down")]
ROWS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
ATTN_HEADS = [(32, 8, "llama3_8b tp1"), (16, 2, "llama3_70b tp4"), (8, 1, "llama3_70b tp8")]
DECODE_BATCH = [1, 4, 16, 64, 256]
DECODE_CTX = [1024, 4096, 16384]
PREFILL = [(1, 512), (1, 1024), (1, 2048), (1, 4096), (1, 8192), (4, 1024), (8, 512)]
PAGE = 16

GEMM_COLUMNS = ["gpu", "dtype", "M", "m_run", "K", "N", "shape", "ms", "tflops", "weight_gbps",
                "calls", "spread", "mode", "sm_clock_mhz", "mem_clock_mhz", "power_w"]
ATTN_COLUMNS = ["phase", "kernel", "kv_dtype", "batch", "ctx", "q_heads", "kv_heads", "head_dim",
                "deployment", "ms", "tflops", "gbps", "flops", "bytes", "copies", "segments",
                "spread", "check_rel_err", "hardware", "gpu", "torch", "cuda", "sm_clock_mhz",
                "mem_clock_mhz"]


def graph_time(fns, reps: int = 10) -> tuple[float, float, dict]:
    """Per-call ms of the calls in `fns`, captured back to back in one CUDA graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for f in fns:
            f()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for f in fns:
            f()
    for _ in range(3):
        g.replay()
    torch.cuda.synchronize()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for s, e in ev:
        s.record()
        g.replay()
        e.record()
    seen = clocks(torch.cuda.current_device())
    torch.cuda.synchronize()
    ms = sorted(s.elapsed_time(e) / len(fns) for s, e in ev)
    med = statistics.median(ms)
    del g
    return med, (ms[int(0.9 * (reps - 1))] - ms[int(0.1 * (reps - 1))]) / med, seen


def quantize(t: torch.Tensor):
    scale = (t.abs().amax().float() / FP8_MAX).clamp(min=1e-12)
    return (t / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), scale


def gemm_sweep(out: RowWriter, budget: Budget, gpu: str) -> None:
    l2 = l2_bytes()
    for k, n, name in SHAPES:
        if budget.spent():
            print(f"gemm budget spent before {name}")
            return
        copies = {"bf16": max(2, math.ceil(3 * l2 / (k * n * 2))),
                  "fp8": max(2, math.ceil(3 * l2 / (k * n)))}
        copies = {d: min(c, 16) for d, c in copies.items()}
        w = [torch.randn(k, n, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(copies["bf16"])]
        w8 = []
        for i in range(copies["fp8"]):
            q, s = quantize(w[i % len(w)].t().contiguous())  # [N, K] row-major
            w8.append((q.t(), s))  # [K, N] column-major, as cuBLASLt wants the fp8 B operand
        for m in ROWS:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            ms, spread, seen = graph_time([lambda wi=wi: x @ wi for wi in w])
            out.write(dict(gpu=gpu, dtype="bf16", M=m, m_run=m, K=k, N=n, shape=name, ms=ms,
                           tflops=2 * m * k * n / ms / 1e9, weight_gbps=k * n * 2 / ms / 1e6,
                           calls=len(w), spread=spread, mode="graph", **_clk(seen)))
            m_run = m
            while True:
                x8, xs = quantize(torch.randn(m_run, k, device="cuda", dtype=torch.bfloat16))
                try:
                    fns = [lambda q=q, s=s: torch._scaled_mm(x8, q, scale_a=xs, scale_b=s,
                                                             out_dtype=torch.bfloat16) for q, s in w8]
                    fns[0]()
                    torch.cuda.synchronize()
                    break
                except RuntimeError as e:
                    if m_run >= 16:
                        raise
                    print(f"  _scaled_mm refused M={m_run} ({str(e).splitlines()[0][:80]}); padding")
                    m_run = 16
            ms, spread, seen = graph_time(fns)
            out.write(dict(gpu=gpu, dtype="fp8", M=m, m_run=m_run, K=k, N=n, shape=name, ms=ms,
                           tflops=2 * m_run * k * n / ms / 1e9, weight_gbps=k * n / ms / 1e6,
                           calls=len(fns), spread=spread, mode="graph", **_clk(seen)))
        print(f"  gemm {name:18s} K={k:<6d} N={n:<6d} done ({budget.left_s():.0f} s left)", flush=True)
        del w, w8
        free_cuda_memory()


def _clk(seen: dict) -> dict:
    return {k: seen.get(k, "") for k in ("sm_clock_mhz", "mem_clock_mhz", "power_w")}


def make_cache(batch: int, ctx: int, hkv: int, d: int, copies: int, fp8: bool):
    pages_per_seq = -(-ctx // PAGE)
    pages = pages_per_seq * batch * copies
    k = torch.randn(pages, PAGE, hkv, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(pages, PAGE, hkv, d, device="cuda", dtype=torch.bfloat16)
    ks = vs = 1.0
    if fp8:
        k, ks = quantize(k)
        v, vs = quantize(v)
        ks, vs = float(ks), float(vs)
    # Each copy's sequences own pages scattered over the whole cache (a shuffled page order),
    # as a paged cache's are after some serving.
    perm = torch.randperm(pages, device="cuda", dtype=torch.int64).to(torch.int32)
    tables = perm.view(copies, batch, pages_per_seq)
    return k, v, ks, vs, tables


def attention_case(out, base, phase, batch, ctx, hq, hkv, dep, fp8, f16=False, d=128):
    from fp8_attention import PagedAttention, reference

    q_len = 1 if phase == "decode" else ctx
    kv_elem = 1 if fp8 else 2
    kv_bytes = 2 * batch * ctx * hkv * d * kv_elem
    copies = max(1, min(16, math.ceil(3 * l2_bytes() / kv_bytes)))
    k, v, ks, vs, tables = make_cache(batch, ctx, hkv, d, copies, fp8)
    seq = torch.full((batch,), ctx, device="cuda", dtype=torch.int32)
    q = torch.randn(batch * q_len, hq, d, device="cuda", dtype=torch.bfloat16)
    attn = PagedAttention(hq, hkv, d, PAGE, batch, q_len, ctx, fp8, f16=f16)
    # correctness on the first two sequences (float32 reference over the dequantised cache)
    sub = min(batch, 2)
    got = attn(q, k, v, tables[0], seq, ks, vs)[: sub * q_len].float()
    want = reference(q[: sub * q_len], k, v, tables[0, :sub], seq[:sub], q_len, ks, vs)
    err = float((got - want).norm() / want.norm())
    kernel = "triton_paged_f16" if attn.f16 else "triton_paged"
    if not err < 2e-2 or not math.isfinite(err):
        print(f"  {phase} {batch}x{ctx} {dep} kv={'fp8' if fp8 else 'bf16'}: check FAILED ({err:.3g}), not timed")
        return
    fns = [lambda t=tables[i]: attn(q, k, v, t, seq, ks, vs) for i in range(copies)]
    ms, spread, seen = graph_time(fns)
    keys = ctx if phase == "decode" else (ctx + 1) / 2
    flops = 4 * batch * q_len * hq * d * keys
    nbytes = kv_bytes + 2 * batch * q_len * hq * d * 2  # KV once, Q and O in bf16
    out.write(dict(base, phase=phase, kernel=kernel, kv_dtype="fp8" if fp8 else "bf16", batch=batch,
                   ctx=ctx, q_heads=hq, kv_heads=hkv, head_dim=d, deployment=dep, ms=ms,
                   tflops=flops / ms / 1e9, gbps=nbytes / ms / 1e6, flops=flops, bytes=nbytes,
                   copies=copies, segments=attn.nseg, spread=spread, check_rel_err=err,
                   sm_clock_mhz=seen.get("sm_clock_mhz", ""), mem_clock_mhz=seen.get("mem_clock_mhz", "")))
    print(f"  {phase:7s} {batch:>3d}x{ctx:<6d} {dep:15s} kv={'fp8 ' if fp8 else 'bf16'} {ms:8.4f} ms "
          f"{flops / ms / 1e9:7.1f} TFLOP/s {nbytes / ms / 1e6:7.0f} GB/s err {err:.1e} {kernel}", flush=True)
    del k, v, tables, q, attn
    free_cuda_memory()


def attention_sweep(out: RowWriter, budget: Budget, facts: dict, variants: list[tuple[bool, bool]]) -> None:
    base = {"hardware": hardware_name(), "gpu": facts["gpu"], "torch": facts["torch"], "cuda": facts["cuda"]}
    cases = [("decode", b, c) for b in DECODE_BATCH for c in DECODE_CTX]
    cases.sort(key=lambda x: x[1] * x[2])
    small = [c for c in cases if c[1] * c[2] <= 262144]  # prefill before the largest decodes
    cases = small + [("prefill", b, s) for b, s in PREFILL] + cases[len(small):]
    for phase, b, c in cases:
        for hq, hkv, dep in ATTN_HEADS:
            for fp8, f16 in variants:
                if budget.spent():
                    print(f"attention budget spent before {phase} {b}x{c}")
                    return
                try:
                    attention_case(out, base, phase, b, c, hq, hkv, dep, fp8, f16)
                except Exception as e:  # noqa: BLE001 - one shape failing must not lose the rest
                    print(f"  {phase} {b}x{c} {dep} fp8={fp8}: {e!r}"[:300])
                    free_cuda_memory()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", default=os.environ.get("OUT", "calibration/data"))
    p.add_argument("--prefix", default=None)
    p.add_argument("--parts", default="gemm,attention")
    p.add_argument("--gemm-budget-s", type=float, default=120.0)
    p.add_argument("--attention-budget-s", type=float, default=120.0)
    p.add_argument("--kernels", default="fp8,bf16", help="fp8, bf16, fp8_f16 (comma list)")
    p.add_argument("--suffix", default="", help="appended to the CSV names")
    args = p.parse_args()
    facts = machine_facts()
    prefix = args.prefix or hardware_name()
    print(describe_device(), facts, flush=True)
    parts = args.parts.split(",")
    if "gemm" in parts:
        out = RowWriter(os.path.join(args.out_dir, f"{prefix}_fp8_gemm{args.suffix}.csv"), GEMM_COLUMNS)
        gemm_sweep(out, Budget(args.gemm_budget_s), facts["gpu"])
        print(f"wrote {out.count} gemm rows", flush=True)
    if "attention" in parts:
        out = RowWriter(os.path.join(args.out_dir, f"{prefix}_fp8_attention{args.suffix}.csv"), ATTN_COLUMNS)
        table = {"fp8": (True, False), "bf16": (False, False), "fp8_f16": (True, True)}
        attention_sweep(out, Budget(args.attention_budget_s), facts,
                        [table[k] for k in args.kernels.split(",")])
        print(f"wrote {out.count} attention rows", flush=True)


if __name__ == "__main__":
    main()
