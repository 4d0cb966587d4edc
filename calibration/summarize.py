"""Tables that README.md quotes, computed from the CSVs in calibration/data (stdlib only).

  python3 calibration/summarize.py [data_dir]
"""

from __future__ import annotations

import csv
import os
import statistics
import sys
from collections import defaultdict

DATA = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "data")


def load(name):
    path = os.path.join(DATA, name)
    return list(csv.DictReader(open(path))) if os.path.exists(path) else []


def f(x):
    return float(x) if x not in ("", None) else float("nan")


def steps_by_key(rows):
    return {(r["model"], r["phase"], int(r["batch"]), int(r["ctx"])): r for r in rows}


def decode_table(h100, h200):
    print("\n## Decode step, ctx 1024 (ms; CUDA-graph replay)")
    print("| model | batch | H100 | H200 | H200/H100 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for model in ("llama3_8b", "qwen2_7b"):
        for b in (1, 8, 32, 64, 128, 256, 512):
            a, c = h100.get((model, "decode", b, 1024)), h200.get((model, "decode", b, 1024))
            if a and c:
                print(f"| {model} | {b} | {f(a['ms']):.2f} | {f(c['ms']):.2f} | "
                      f"{f(c['ms']) / f(a['ms']):.2f} |")


def kv_slope(steps, label):
    """Per batch, the least-squares slope of step ms over KV bytes read: the bandwidth at
    which extra context costs time."""
    print(f"\n## {label}: decode time vs KV bytes (slope over ctx 256..16384, per batch)")
    by = defaultdict(list)
    for (model, phase, b, _), r in steps.items():
        if phase == "decode":
            by[(model, b)].append((f(r["kv_bytes"]), f(r["ms"])))
    print("| model | batch | ms at ctx 256 | ms per GB of KV | implied GB/s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for (model, b), pts in sorted(by.items()):
        if len(pts) < 3:
            continue
        xs, ys = [p[0] / 1e9 for p in pts], [p[1] for p in pts]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        print(f"| {model} | {b} | {min(ys):.2f} | {slope:.3f} | {1e3 / slope:.0f} |")


def prefill_table(h100, h200):
    print("\n## Prefill step (ms, CUDA-graph replay; eager in brackets) and model TFLOP/s")
    print("| model | batch x ctx | H100 ms | H100 TFLOP/s | H200 ms | H200 TFLOP/s |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for (model, phase, b, c), a in sorted(h100.items()):
        if phase != "prefill":
            continue
        h = h200.get((model, phase, b, c))
        cells = [f"{f(a['ms']):.1f} ({f(a['ms_eager']):.1f})", f"{f(a['tflops']):.0f}"]
        cells += [f"{f(h['ms']):.1f} ({f(h['ms_eager']):.1f})", f"{f(h['tflops']):.0f}"] if h else ["", ""]
        print(f"| {model} | {b}x{c} | " + " | ".join(cells) + " |")


def breakdown(steps, label, keys):
    print(f"\n## {label}: step time by operator class (sum of separately timed operators)")
    print("| model | phase | batch x ctx | step ms | ops sum | GEMM | attention | attn kernel "
          "| element-wise | LM head | all-reduce |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |")
    for k in keys:
        r = steps.get(k)
        if not r:
            continue
        s = f(r["ms_ops_sum"])
        parts = [f"{f(r[c]):.2f} ({100 * f(r[c]) / s:.0f}%)" for c in
                 ("ms_gemm", "ms_attention")]
        parts.append(r["attn_backend"])
        parts += [f"{f(r[c]):.2f} ({100 * f(r[c]) / s:.0f}%)" for c in
                  ("ms_elementwise", "ms_lm_head", "ms_allreduce")]
        print(f"| {k[0]} | {k[1]} | {k[2]}x{k[3]} | {f(r['ms']):.2f} | {s:.2f} | "
              + " | ".join(parts) + " |")


def ops_vs_step(steps, label):
    ratios = [f(r["ms_ops_sum"]) / f(r["ms"]) for r in steps.values() if r.get("ms_ops_sum")]
    if ratios:
        print(f"\n{label}: ops-sum / step over {len(ratios)} rows: median "
              f"{statistics.median(ratios):.3f}, min {min(ratios):.3f}, max {max(ratios):.3f}")


def gemm_rates(ops, label):
    print(f"\n## {label}: GEMM TFLOP/s (prefill 1x8192, llama3_8b) and weight GB/s (decode b=1)")
    for r in ops:
        if r["model"] != "llama3_8b" or r["op_class"] not in ("qkv_proj", "o_proj", "mlp"):
            continue
        if (r["phase"], r["batch"], r["ctx"]) == ("prefill", "1", "8192"):
            print(f"  prefill {r['op']:13s} {f(r['tflops']):6.0f} TFLOP/s")
        if (r["phase"], r["batch"], r["ctx"]) == ("decode", "1", "1024"):
            print(f"  decode  {r['op']:13s} {f(r['gbps']):6.0f} GB/s")


def hbm(rows, label):
    best = defaultdict(float)
    for r in rows:
        if r["kind"] == "hbm":
            best[r["op"]] = max(best[r["op"]], f(r["gbps"]))
    print(f"\n{label} HBM, best GB/s: " + ", ".join(f"{k} {v:.0f}" for k, v in best.items()))


def allreduce(rows):
    if not rows:
        return
    print("\n## NCCL all-reduce on 4 H200 (bf16, CUDA-graph mode): us and bus GB/s")
    print("| bytes | tp=2 us | tp=2 busbw | tp=4 us | tp=4 busbw |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    t = {(int(r["tp"]), int(r["bytes"])): r for r in rows if r["mode"] == "graph"}
    for n in sorted({k[1] for k in t}):
        cells = []
        for tp in (2, 4):
            r = t.get((tp, n))
            cells += [f"{1e3 * f(r['ms']):.1f}", f"{f(r['busbw_gbps']):.0f}"] if r else ["", ""]
        print(f"| {n} | " + " | ".join(cells) + " |")


def main():
    h100, h200 = steps_by_key(load("h100_sxm_steps.csv")), steps_by_key(load("h200_steps.csv"))
    tp4 = steps_by_key(load("h200x4_llama70b_tp4_steps.csv"))
    decode_table(h100, h200)
    prefill_table(h100, h200)
    kv_slope(h100, "H100")
    kv_slope(h200, "H200")
    keys = [(m, "decode", b, c) for m in ("llama3_8b",) for b, c in
            ((1, 1024), (64, 1024), (256, 1024), (512, 256), (64, 16384))]
    keys += [("llama3_8b", "prefill", 1, 512), ("llama3_8b", "prefill", 1, 8192)]
    breakdown(h100, "H100", keys)
    breakdown(h200, "H200", keys)
    breakdown(tp4, "H200 x4, Llama-3.1-70B TP4", sorted(tp4))
    for label, s in (("H100", h100), ("H200", h200), ("H200 x4 TP4", tp4)):
        ops_vs_step(s, label)
    gemm_rates(load("h100_sxm_ops.csv"), "H100")
    gemm_rates(load("h200_ops.csv"), "H200")
    hbm(load("h100_sxm_bandwidth.csv"), "H100")
    hbm(load("h200_bandwidth.csv"), "H200")
    allreduce(load("h200x4_allreduce.csv"))


if __name__ == "__main__":
    main()
