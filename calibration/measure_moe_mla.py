"""Grouped expert GEMMs and absorbed MLA decode attention on one GPU, at the sizes decode sees.

    python3 calibration/measure_moe_mla.py --out-dir $OUT [--prefix h200]

What one GPU can measure of the MoE and MLA cost models (sim/cost/moe.py, sim/cost/mla.py);
the all-to-all, NIC transfers and cross-node all-reduce need several GPUs and are not here.

MoE (`<prefix>_moe.csv`): one layer's routed experts as vLLM's fused_moe runs them: the
experts that were hit, each with the same number of token rows, w13 (hidden -> 2 x expert
width) then w2 (expert width -> hidden), timed as one batched GEMM each (torch.bmm over the
hit experts, bf16; fp8 grouped GEMMs are not measured here). Rows per
expert = tokens x top_k / experts hit, as the simulator prices it. Shapes: DeepSeek-V3 per GPU
under EP8 (32 local experts, 7168 x 2048) and Qwen3-30B-A3B at EP1 (128 experts, 2048 x 768).

MLA (`<prefix>_mla.csv`): the absorbed decode of DeepSeek-V3 (vLLM's MLA backends,
`vllm/v1/attention/backends/mla/`): q_nope x W_UK into the latent space (bmm per head), then
attention of `heads` query heads over one shared latent K of 576 (512 + 64 rope) and V of 512
per token, then x W_UV back to 128 per head. Written in PyTorch (bmm, softmax, bmm) over a
contiguous latent cache: a stand-in for FlashMLA, whose paged kernel could not be built here,
so these times bound FlashMLA's from above.

Each figure is the median of 20 CUDA-event-timed runs after 3 warm-ups.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics

import torch


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


# (name, hidden, expert width, local experts, top_k, experts in the whole model)
MOE_SHAPES = [
    ("deepseek_v3_ep8", 7168, 2048, 32, 8, 256),
    ("qwen3_30b_a3b", 2048, 768, 128, 8, 128),
]
MOE_TOKENS = [1, 8, 32, 64, 128, 256, 512, 1024, 2048]  # tokens of the whole batch


def expected_hit(experts: int, top_k: int, tokens: int) -> float:
    return experts * (1.0 - (1.0 - top_k / experts) ** tokens)


def measure_moe(path: str) -> None:
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["shape", "dtype", "tokens", "local_experts_hit", "rows_per_expert", "hidden", "width", "ms_w13", "ms_w2"])
        for name, hidden, width, local, top_k, total in MOE_SHAPES:
            w13 = torch.randn(local, hidden, 2 * width, device="cuda", dtype=torch.bfloat16) * 0.02
            w2 = torch.randn(local, width, hidden, device="cuda", dtype=torch.bfloat16) * 0.02
            for tokens in MOE_TOKENS:
                # tokens of the whole EP group; this GPU holds `local` of the `total` experts
                rows_total = tokens * top_k * local / total
                hit = max(1, round(expected_hit(total, top_k, tokens) * local / total))
                rows = max(1, round(rows_total / hit))
                a = torch.randn(hit, rows, hidden, device="cuda", dtype=torch.bfloat16)
                b = torch.randn(hit, rows, width, device="cuda", dtype=torch.bfloat16)
                ms13 = time_ms(lambda: torch.bmm(a, w13[:hit]))
                ms2 = time_ms(lambda: torch.bmm(b, w2[:hit]))
                out.writerow([name, "bf16", tokens, hit, rows, hidden, width, f"{ms13:.5f}", f"{ms2:.5f}"])
            f.flush()


MLA_HEADS = [16, 128]  # DeepSeek-V3 heads per GPU at TP8, and at DP attention (TP1)
MLA_BATCH = [1, 8, 32, 64, 128, 256]
MLA_CONTEXT = [1024, 4096]
KV_LORA, ROPE, NOPE, V_DIM = 512, 64, 128, 128


def measure_mla(path: str) -> None:
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["heads", "batch", "context", "ms_absorb_q", "ms_attention", "ms_absorb_o", "kv_bytes"])
        for heads in MLA_HEADS:
            w_uk = torch.randn(heads, NOPE, KV_LORA, device="cuda", dtype=torch.bfloat16) * 0.02
            w_uv = torch.randn(heads, KV_LORA, V_DIM, device="cuda", dtype=torch.bfloat16) * 0.02
            for context in MLA_CONTEXT:
                for batch in MLA_BATCH:
                    if batch * context > 256 * 4096:
                        continue
                    q_nope = torch.randn(heads, batch, NOPE, device="cuda", dtype=torch.bfloat16)
                    q_lat = torch.randn(batch, heads, KV_LORA + ROPE, device="cuda", dtype=torch.bfloat16)
                    cache = torch.randn(batch, context, KV_LORA + ROPE, device="cuda", dtype=torch.bfloat16)
                    o_lat = torch.randn(heads, batch, KV_LORA, device="cuda", dtype=torch.bfloat16)
                    scale = (NOPE + ROPE) ** -0.5

                    def attend():
                        s = torch.bmm(q_lat, cache.transpose(1, 2)) * scale  # batch x heads x context
                        p = torch.softmax(s.float(), dim=-1).to(torch.bfloat16)
                        return torch.bmm(p, cache[:, :, :KV_LORA])  # batch x heads x 512

                    ms_q = time_ms(lambda: torch.bmm(q_nope, w_uk))
                    ms_a = time_ms(attend)
                    ms_o = time_ms(lambda: torch.bmm(o_lat, w_uv))
                    kv_bytes = batch * context * (KV_LORA + ROPE) * 2
                    out.writerow([heads, batch, context, f"{ms_q:.5f}", f"{ms_a:.5f}", f"{ms_o:.5f}", kv_bytes])
                    del cache
            f.flush()


def main() -> None:
    p = argparse.ArgumentParser(description="MoE grouped GEMMs and MLA decode on one GPU")
    p.add_argument("--out-dir", default=os.environ.get("OUT", "calibration/data"))
    p.add_argument("--prefix", default="gpu")
    args = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    print(torch.__version__, torch.cuda.get_device_name())
    measure_moe(os.path.join(args.out_dir, f"{args.prefix}_moe.csv"))
    measure_mla(os.path.join(args.out_dir, f"{args.prefix}_mla.csv"))


if __name__ == "__main__":
    main()
