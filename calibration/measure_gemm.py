"""GEMM throughput sweep on one GPU: bf16 and fp8 (W8A8) projections of Llama-shaped models.

    python3 calibration/measure_gemm.py --out-dir $OUT [--prefix h100_sxm]

Method (the one of shared/calibration/h100_sxm_gemm.csv): `x @ w` with x M x K, w K x N, both
bfloat16; fp8 through torch._scaled_mm with float8_e4m3fn operands and unit per-tensor scales,
bf16 output, rows below 16 padded to 16. Each figure is the median of 20 runs timed with CUDA
events after 3 warm-ups; each weight is larger than L2, so it streams from HBM on every run.
Columns: gpu, dtype, M, K, N, ms, tflops (2 M K N / time), weight_gbps (weight bytes / time).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics

import torch

SHAPES = [  # (K, N): Llama-3-8B and -70B projections (qkv, gate_up, down)
    (4096, 6144), (4096, 28672), (14336, 4096),
    (8192, 10240), (8192, 57344), (28672, 8192),
]  # fmt: skip
ROWS = [1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]


def time_ms(fn, warmup: int = 3, reps: int = 20) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", default=os.environ.get("OUT", "calibration/data"))
    p.add_argument("--prefix", default="gpu")
    p.add_argument("--no-fp8", action="store_true")
    args = p.parse_args()
    gpu = torch.cuda.get_device_name().replace(" ", "_")
    fp8 = not args.no_fp8 and hasattr(torch, "float8_e4m3fn") and torch.cuda.get_device_capability() >= (8, 9)
    path = os.path.join(args.out_dir, f"{args.prefix}_gemm.csv")
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["gpu", "dtype", "M", "K", "N", "ms", "tflops", "weight_gbps"])
        for k, n in SHAPES:
            w = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
            w8 = w.to(torch.float8_e4m3fn).t().contiguous().t() if fp8 else None
            one = torch.ones((), device="cuda")
            for m in ROWS:
                x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
                ms = time_ms(lambda: x @ w)
                out.writerow([gpu, "bf16", m, k, n, ms, 2 * m * k * n / ms / 1e9, k * n * 2 / ms / 1e6])
                if fp8:
                    x8 = torch.randn(max(m, 16), k, device="cuda").to(torch.float8_e4m3fn)
                    ms = time_ms(lambda: torch._scaled_mm(x8, w8, scale_a=one, scale_b=one, out_dtype=torch.bfloat16))
                    rows = max(m, 16)
                    out.writerow([gpu, "fp8", m, k, n, ms, 2 * rows * k * n / ms / 1e9, k * n / ms / 1e6])
                f.flush()
            del w, w8
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
