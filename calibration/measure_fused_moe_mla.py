"""vLLM's MoE and MLA decode kernels, as Triton kernels of their design, timed on one GPU.

    python3 calibration/measure_fused_moe_mla.py --out-dir $OUT [--prefix h200] [--budget-s 420]

Writes `<prefix>_fused_moe.csv`, `<prefix>_mla_triton.csv` and `<prefix>_kernel_checks.csv`
(each kernel against its PyTorch reference first); `--only mla_mixed` writes
`<prefix>_mla_triton_mixed.csv` (batches of mixed context lengths, a check of the model). The kernels: calibration/fused_moe_kernel.py
(vLLM's fused_moe: sorted, block-padded token -> expert rows, one launch over all experts) and
calibration/mla_decode_kernel.py (vLLM's TRITON_MLA: split-KV decode over a paged latent
cache, then a reduce). The fits: `python -m sim.calibrate.moe_mla_fit`.

MoE: routing is uniform (each token's top_k distinct experts drawn at random), as the cost
model assumes; with EP this GPU holds experts [0, local) of `total` and keeps the rows routed
to them. Block sizes follow vLLM 0.24.0's choice for the shape: its tuned H200 tables where
it ships one (`fused_moe/configs/E=128,N=768,device_name=NVIDIA_H200.json` for Qwen3-30B-A3B
bf16; `E=32,N=2048,...,dtype=fp8_w8a8,block_shape=[128,128].json` for DeepSeek-V3 fp8 at
EP8, BLOCK_K capped at the 128 scale group), else `get_default_config` (DeepSeek-V3 bf16).

Timing: kernels inside a CUDA graph (as vLLM's decode runs), LAYERS back-to-back calls each on
its own weights / cache and routing, so nothing stays in L2 from one call to the next as
within a real forward; the CUDA-event time of a replay (median of 10, 3 warm-ups) / LAYERS.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import fused_moe_kernel as moe
import mla_decode_kernel as mla

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for sim's table
from sim.cost.fused_moe_configs import fused_moe_config  # noqa: E402  (torch-free, no deps)

LAYERS = 8
FP8 = torch.float8_e4m3fn

# (name, hidden, expert width, local experts, total experts, top_k, dtypes)
MOE_SHAPES = [
    ("deepseek_v3_ep8", 7168, 2048, 32, 256, 8, ("bf16", "fp8")),
    ("qwen3_30b_a3b", 2048, 768, 128, 128, 8, ("bf16",)),
]
MOE_TOKENS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
# Shapes the fits never see, at vLLM's blocks (DeepSeek-V3 TP8 fp8: its tuned H200 table; the
# rest: get_default_config):
# DeepSeek-V3 at TP8 without EP (every expert 8 ways thin), Qwen3-235B-A22B at EP8, Mixtral-8x7B
# at TP2 (2 of 8 experts per token).
HOLDOUT_SHAPES = [
    ("deepseek_v3_tp8", 7168, 256, 256, 256, 8, ("fp8", "bf16")),
    ("qwen3_235b_a22b_ep8", 4096, 1536, 16, 128, 8, ("bf16",)),
    ("mixtral_8x7b_tp2", 4096, 7168, 8, 8, 2, ("bf16",)),
]
HOLDOUT_TOKENS = [1, 4, 16, 64, 256, 1024, 4096]

def vllm_config(dtype: str, tokens: int, local: int, width: int) -> tuple[int, ...]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages) as vLLM picks them on an H200:
    the simulator's own table (sim/cost/fused_moe_configs.py), so both use the same configs."""
    return fused_moe_config("h200", tokens, local, width, dtype)


def graph_ms(calls, replays: int = 10, warmup: int = 3) -> float:
    """Median time of one call, the calls captured back to back in one CUDA graph."""
    for c in calls:
        c()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for c in calls:
            c()
    for _ in range(warmup):
        graph.replay()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    del graph
    return statistics.median(times) / len(calls)


def route(tokens: int, total: int, top_k: int, gen: torch.Generator) -> torch.Tensor:
    scores = torch.rand(tokens, total, generator=gen, device="cuda")
    return scores.topk(top_k, dim=1).indices.to(torch.int32)


def quantize_blocks(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row 1 x 128 groups (activations): fp8 values and fp32 scales."""
    g = x.float().reshape(x.shape[0], -1, moe.SCALE_GROUP)
    s = g.abs().amax(-1).clamp(min=1e-6) / 448.0
    return (g / s[..., None]).to(FP8).reshape(x.shape), s.contiguous()


def expert_weights(layers, experts, n, k, dtype):
    """(weights, 128 x 128 block scales or None) of `layers` layers of (experts, n, k)."""
    if dtype == "bf16":
        return torch.randn(layers, experts, n, k, device="cuda", dtype=torch.bfloat16) * 0.02, None
    w = torch.empty(layers, experts, n, k, device="cuda", dtype=FP8)
    for i in range(layers):
        w[i] = torch.randn(experts, n, k, device="cuda", dtype=torch.bfloat16).to(FP8)
    g = moe.SCALE_GROUP
    return w, torch.full((layers, experts, n // g, k // g), 0.02 / 3, device="cuda")


def check_moe(writer, name, hidden, width, local, total, top_k, dtype, w13, s13, w2, s2, gen) -> None:
    tokens = 37
    ids = route(tokens, total, top_k, gen)
    x = torch.randn(tokens, hidden, device="cuda", dtype=torch.bfloat16)
    inter = torch.randn(tokens * top_k, width, device="cuda", dtype=torch.bfloat16)
    weights = torch.rand(tokens * top_k, device="cuda")
    for gemm, a, b, bs, rpt, wts in (("w13", x, w13[0], s13, top_k, None), ("w2", inter, w2[0], s2, 1, weights)):
        cfg = vllm_config(dtype, tokens, local, width)
        routing = moe.align(ids, local, cfg[0])
        a_in, a_s = (a, None) if dtype == "bf16" else quantize_blocks(a)
        b_s = None if bs is None else bs[0]
        c = torch.zeros(tokens * top_k, b.shape[1], device="cuda", dtype=torch.bfloat16)
        moe.grouped_gemm(a_in, b, c, routing, rpt, cfg, wts, a_s, b_s)
        ref = moe.reference(a_in, b, ids, local, rpt, wts, a_s, b_s)
        err = float((c.float() - ref).abs().max() / ref.abs().max().clamp(min=1e-9))
        writer.writerow(["fused_moe", f"{name} {dtype} {gemm} T={tokens}", f"{err:.2e}", err < 2e-2])
        print(f"check fused_moe {name} {dtype} {gemm}: max rel err {err:.2e}", flush=True)


def measure_moe(path: str, checks, deadline: float, seed: int = 0, holdout: bool = False) -> None:
    """`holdout`: HOLDOUT_SHAPES at vLLM's default blocks instead of the fitted shapes."""
    shapes, token_counts = (HOLDOUT_SHAPES, HOLDOUT_TOKENS) if holdout else (MOE_SHAPES, MOE_TOKENS)
    gen = torch.Generator(device="cuda").manual_seed(seed)
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow([
            "shape", "dtype", "tokens", "top_k", "local_experts", "total_experts", "hidden", "width",
            "block_m", "block_n", "block_k", "rows", "hit", "padded_rows", "ms_w13", "ms_w2",
        ])  # fmt: skip
        for name, hidden, width, local, total, top_k, dtypes in shapes:
            for dtype in dtypes:
                w13, s13 = expert_weights(LAYERS, local, 2 * width, hidden, dtype)
                w2, s2 = expert_weights(LAYERS, local, hidden, width, dtype)
                check_moe(checks, name, hidden, width, local, total, top_k, dtype, w13, s13, w2, s2, gen)
                for tokens in token_counts:
                    if time.monotonic() > deadline:
                        print("moe: budget spent, stopping", flush=True)
                        return
                    cfg = vllm_config(dtype, tokens, local, width)
                    if holdout and (2 * width) % cfg[1]:  # N must tile: DeepSeek TP8's w13 is 512 wide
                        raise ValueError(f"{name}: N={2 * width} does not tile by {cfg[1]}")
                    x = torch.randn(tokens, hidden, device="cuda", dtype=torch.bfloat16)
                    inter = torch.randn(tokens * top_k, width, device="cuda", dtype=torch.bfloat16)
                    x_in, x_s = (x, None) if dtype == "bf16" else quantize_blocks(x)
                    i_in, i_s = (inter, None) if dtype == "bf16" else quantize_blocks(inter)
                    weights = torch.rand(tokens * top_k, device="cuda")
                    c13 = torch.empty(tokens * top_k, 2 * width, device="cuda", dtype=torch.bfloat16)
                    c2 = torch.empty(tokens * top_k, hidden, device="cuda", dtype=torch.bfloat16)
                    routings = [moe.align(route(tokens, total, top_k, gen), local, cfg[0]) for _ in range(LAYERS)]
                    calls13 = [
                        (lambda l=l: moe.grouped_gemm(x_in, w13[l], c13, routings[l], top_k, cfg, None, x_s, None if s13 is None else s13[l]))
                        for l in range(LAYERS)
                    ]  # fmt: skip
                    calls2 = [
                        (lambda l=l: moe.grouped_gemm(i_in, w2[l], c2, routings[l], 1, cfg, weights, i_s, None if s2 is None else s2[l]))
                        for l in range(LAYERS)
                    ]  # fmt: skip
                    ms13, ms2 = graph_ms(calls13), graph_ms(calls2)
                    rows = statistics.mean(r[3] for r in routings)
                    hit = statistics.mean(r[4] for r in routings)
                    padded = statistics.mean(int(r[2]) for r in routings)
                    out.writerow([
                        name, dtype, tokens, top_k, local, total, hidden, width, cfg[0], cfg[1], cfg[2],
                        f"{rows:.2f}", f"{hit:.2f}", f"{padded:.2f}", f"{ms13:.5f}", f"{ms2:.5f}",
                    ])  # fmt: skip
                    f.flush()
                    print(f"moe {name} {dtype} T={tokens} hit={hit:.1f} rows={rows:.0f} w13 {ms13:.4f} ms w2 {ms2:.4f} ms", flush=True)
                del w13, w2, s13, s2
                torch.cuda.empty_cache()


MLA_HEADS = [16, 128]  # DeepSeek-V3 heads per GPU at TP8, and with DP attention (TP1)
MLA_BATCH = [1, 2, 4, 8, 16, 32, 64, 128, 256]
MLA_CONTEXT = [1024, 2048, 4096]
PAGE = 16  # vLLM's default --block-size on CUDA
LATENT = mla.KV_LORA + mla.ROPE
SCALE = (128 + 64) ** -0.5  # DeepSeek-V3: softmax scale of qk_nope + qk_rope


def check_mla(writer, pool) -> None:
    for heads in MLA_HEADS:
        lens = torch.tensor([1, 3, 100, 1000, 4096], dtype=torch.int32, device="cuda")
        pages = -(-int(lens.max()) // PAGE)
        table = torch.randperm(pool.shape[0], device="cuda")[: len(lens) * pages].reshape(len(lens), pages).to(torch.int32)
        q = torch.randn(len(lens), heads, LATENT, device="cuda", dtype=torch.bfloat16)
        got = mla.MlaDecode(len(lens), heads)(q, pool, table, lens, SCALE).float()
        ref = mla.reference(q, pool, table, lens, SCALE)
        err = float((got - ref).abs().max() / ref.abs().max())
        writer.writerow(["mla_decode", f"heads={heads} lens=1,3,100,1000,4096 page={PAGE}", f"{err:.2e}", err < 2e-2])
        print(f"check mla heads={heads}: max rel err {err:.2e}", flush=True)


def measure_mla(path: str, checks, deadline: float) -> None:
    need = LAYERS * max(MLA_BATCH) * max(MLA_CONTEXT) // PAGE
    pool = torch.randn(need, PAGE, LATENT, device="cuda", dtype=torch.bfloat16)
    check_mla(checks, pool)
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["heads", "batch", "context", "page_size", "num_kv_splits", "block_h", "ms_attention", "kv_bytes"])
        for heads in MLA_HEADS:
            for context in MLA_CONTEXT:
                for batch in MLA_BATCH:
                    if time.monotonic() > deadline:
                        print("mla: budget spent, stopping", flush=True)
                        return
                    pages = -(-context // PAGE)
                    perm = torch.randperm(need, device="cuda")[: LAYERS * batch * pages].to(torch.int32)
                    tables = perm.reshape(LAYERS, batch, pages)
                    lens = torch.full((batch,), context, dtype=torch.int32, device="cuda")
                    q = torch.randn(batch, heads, LATENT, device="cuda", dtype=torch.bfloat16)
                    kernel = mla.MlaDecode(batch, heads)
                    calls = [(lambda l=l: kernel(q, pool, tables[l], lens, SCALE)) for l in range(LAYERS)]
                    ms = graph_ms(calls)
                    kv_bytes = batch * context * LATENT * 2
                    out.writerow([heads, batch, context, PAGE, mla.NUM_KV_SPLITS, mla.BLOCK_H, f"{ms:.5f}", kv_bytes])
                    f.flush()
                    print(f"mla heads={heads} batch={batch} context={context}: {ms:.4f} ms ({kv_bytes / ms / 1e9:.2f} TB/s)", flush=True)


def measure_mla_mixed(path: str, deadline: float) -> None:
    """Batches of mixed context lengths (uniform in [64, 4096], seeded): what a batch summary of
    total context alone cannot tell (a split's walk is set by the longest sequences)."""
    gen = torch.Generator(device="cpu").manual_seed(1)
    longest = max(MLA_CONTEXT)
    need = LAYERS * max(MLA_BATCH) * longest // PAGE
    pool = torch.randn(need, PAGE, LATENT, device="cuda", dtype=torch.bfloat16)
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["heads", "batch", "total_context", "max_context", "page_size", "ms_attention", "kv_bytes"])
        for heads in MLA_HEADS:
            for batch in (2, 8, 32, 128):
                if time.monotonic() > deadline:
                    return
                lens_cpu = torch.randint(64, longest + 1, (batch,), generator=gen, dtype=torch.int32)
                lens = lens_cpu.cuda()
                pages = -(-longest // PAGE)
                perm = torch.randperm(need, device="cuda")[: LAYERS * batch * pages].to(torch.int32)
                tables = perm.reshape(LAYERS, batch, pages)
                q = torch.randn(batch, heads, LATENT, device="cuda", dtype=torch.bfloat16)
                kernel = mla.MlaDecode(batch, heads)
                ms = graph_ms([(lambda l=l: kernel(q, pool, tables[l], lens, SCALE)) for l in range(LAYERS)])
                total = int(lens_cpu.sum())
                out.writerow([heads, batch, total, int(lens_cpu.max()), PAGE, f"{ms:.5f}", total * LATENT * 2])
                f.flush()
                print(f"mla mixed heads={heads} batch={batch} total={total}: {ms:.4f} ms", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", default=os.environ.get("OUT", "calibration/data"))
    p.add_argument("--prefix", default="h200")
    p.add_argument("--budget-s", type=float, default=420.0, help="stop starting new shapes after this")
    p.add_argument("--seed", type=int, default=0, help="of the MoE routing")
    p.add_argument("--only", choices=("moe", "moe_holdout", "mla", "mla_mixed", "both"), default="both")
    args = p.parse_args()
    import triton

    print("torch", torch.__version__, "triton", triton.__version__, torch.cuda.get_device_name(), flush=True)
    deadline = time.monotonic() + args.budget_s
    if args.only == "moe_holdout":
        with open(os.path.join(args.out_dir, f"{args.prefix}_kernel_checks_holdout.csv"), "w", newline="") as f:
            checks = csv.writer(f)
            checks.writerow(["kernel", "case", "max_rel_error", "ok"])
            measure_moe(os.path.join(args.out_dir, f"{args.prefix}_fused_moe_holdout.csv"), checks, deadline, args.seed, True)
        return
    if args.only == "mla_mixed":
        measure_mla_mixed(os.path.join(args.out_dir, f"{args.prefix}_mla_triton_mixed.csv"), deadline)
        return
    with open(os.path.join(args.out_dir, f"{args.prefix}_kernel_checks.csv"), "w", newline="") as f:
        checks = csv.writer(f)
        checks.writerow(["kernel", "case", "max_rel_error", "ok"])
        if args.only in ("mla", "both"):
            measure_mla(os.path.join(args.out_dir, f"{args.prefix}_mla_triton.csv"), checks, deadline)
        if args.only in ("moe", "both"):
            measure_moe(os.path.join(args.out_dir, f"{args.prefix}_fused_moe.csv"), checks, deadline, args.seed)
    print("done", flush=True)


if __name__ == "__main__":
    main()
