"""GPU time of whole engine steps (decode and prefill) of Llama-shaped models, and of each
operator class of the same steps. See calibration/README.md for the method.

One GPU:     python3 calibration/measure_steps.py --out-dir $OUT
TP (NCCL):   torchrun --nproc-per-node 4 calibration/measure_steps.py --models llama3_70b ...
CPU smoke:   python3 calibration/measure_steps.py --tiny --out-dir /tmp/calib
"""

from __future__ import annotations

import argparse
import builtins
import os
import time

import torch

from calib_common import ARCHS, Budget, RowWriter, bench, describe_device, free_cuda_memory
from calib_common import hardware_name, machine_facts
from calib_model import Decoder
from step_ops import OP_COLUMNS, OpTimer

STEP_COLUMNS = [
    "phase", "batch", "ctx", "tokens", "ms", "hardware", "model", "tp",
    "cuda_graph", "ms_eager", "ms_graph", "ms_min", "spread", "reps",
    "flops", "tflops", "weight_bytes", "kv_bytes", "weight_kv_gbps", "kv_regions", "kv_fits_real",
    "ms_ops_sum", "ms_gemm", "ms_attention", "ms_elementwise", "ms_lm_head", "ms_allreduce",
    "attn_backend", "ms_attn_flash", "ms_attn_cudnn", "elementwise_mode", "gpu", "driver", "torch", "cuda",
    "sm_clock_mhz", "mem_clock_mhz", "power_w", "temp_c", "max_sm_clock_mhz", "power_limit_w",
]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="llama3_8b,qwen2_7b")
    p.add_argument("--decode-batches", default="1,2,4,8,16,32,64,128,256,512")
    p.add_argument("--decode-ctx", default="256,1024,4096,16384")
    p.add_argument("--prefill", default="1x512,1x1024,1x2048,1x4096,1x8192,4x1024,8x512",
                   help="BATCHxCTX items")
    p.add_argument("--out-dir", default=os.environ.get("OUT", "calibration/data"))
    p.add_argument("--prefix", default=None, help="file prefix; default: the hardware name")
    p.add_argument("--budget-s", type=float, default=330.0, help="wall-clock allowance, all models")
    p.add_argument("--reps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-ops", action="store_true", help="skip the per-operator breakdown")
    p.add_argument("--no-compile", action="store_true", help="element-wise ops eager, unfused")
    p.add_argument("--mem-margin-gib", type=float, default=6.0)
    p.add_argument("--tiny", action="store_true", help="CPU smoke test: tiny model, tiny grid")
    return p.parse_args()


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


class Dist:
    """Rank facts and the collective agreements a TP run needs (no-ops on one process)."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local = int(os.environ.get("LOCAL_RANK", "0"))
        self.group = None
        if self.world > 1:
            for var, val in (("NCCL_NVLS_ENABLE", "0"), ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1"),
                             ("NVSHMEM_DISABLE_NVLS", "1")):
                os.environ[var] = val  # NVLink multicast stays off (device README)
            if torch.cuda.is_available():
                torch.cuda.set_device(self.local)
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            torch.distributed.init_process_group(backend)
            self.group = torch.distributed.group.WORLD

    def any(self, flag: bool) -> bool:
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=_dev())
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item() > 0)

    def max(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], device=_dev(), dtype=torch.float64)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return float(t.item())


def _dev() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def kv_buffer_tokens(arch, tp: int, need_tokens: int, margin_gib: float) -> int:
    """Tokens of per-layer KV the shared buffer holds: all layers' worth of the largest
    config if memory allows, else what fits beside the weights."""
    n_kv, d = max(1, arch.kv_heads // tp), arch.head_dim
    per_token = 2 * n_kv * d * 2  # K and V, bf16
    want = need_tokens * arch.layers
    if not torch.cuda.is_available():
        return want
    free, _ = torch.cuda.mem_get_info()
    per_layer = arch.hidden * ((arch.heads + 2 * n_kv * tp) * d // tp + arch.heads * d // tp
                               + 3 * arch.ffn // tp)
    weights = (per_layer * arch.layers + 2 * arch.vocab * arch.hidden // tp) * 2
    room = free - weights - int(margin_gib * 2**30)
    return max(0, min(want, room // per_token))


def step_flops(dec: Decoder, phase: str, batch: int, ctx: int) -> float:
    a, d = dec.arch, dec.arch.head_dim
    tokens = batch if phase == "decode" else batch * ctx
    per_layer_w = a.hidden * dec.qkv_out + dec.n_q * d * a.hidden + 3 * a.hidden * dec.ffn
    gemm = 2 * tokens * per_layer_w * a.layers + 2 * batch * a.hidden * dec.vocab
    keys = ctx if phase == "decode" else (ctx + 1) / 2  # causal: a query sees (i+1) keys
    attn = 4 * batch * (1 if phase == "decode" else ctx) * dec.n_q * d * keys * a.layers
    return gemm + attn


def measure_config(dec, ops, dist, args, state, base, ops_out, phase, batch, ctx) -> dict:
    """One (phase, batch, ctx): attention backends first (the step uses the faster), then
    the other operators, then the whole step. Returns the step row."""
    arch, dev = dec.arch, _dev()
    tokens = batch * ctx  # KV tokens of the step (decode: cached; prefill: written)
    regions = dec.kv_regions(tokens)
    ops.graph = state["graph"]
    backend, attn = ops.attention(phase, batch, ctx, regions, base, ops_out, dist.max)
    row = dict(base, phase=phase, batch=batch, ctx=ctx, kv_regions=regions, attn_backend=backend,
               tokens=batch if phase == "decode" else tokens,
               ms_attn_flash=attn.get("flash", float("inf")) * arch.layers,
               ms_attn_cudnn=attn.get("cudnn", float("inf")) * arch.layers)
    row.update(ops.measure(phase, batch, ctx, regions, base, ops_out, attn[backend]))
    ms_eager = ms_graph = None
    if phase == "decode":
        ids = torch.randint(0, arch.vocab, (batch,), device=dev)
        pos = torch.full((batch,), ctx - 1, device=dev)

        def step():
            return dec.forward(ids, pos, lambda i, q, k, v: dec.attn_decode(
                i, q, k, v, batch, ctx, regions, backend))
        try:
            tm = bench(step, graph=state["graph"], warmup=args.warmup, reps=args.reps)
        except Exception as e:  # noqa: BLE001 - e.g. a collective refusing capture
            print(f"  CUDA graph capture failed ({e!r}); decode runs eagerly from here")
            state["graph"] = False
            tm = bench(step, graph=False, warmup=args.warmup, reps=args.reps)
        ms_graph, ms_eager = (tm.median, None) if state["graph"] else (None, tm.median)
        row["cuda_graph"] = state["graph"]
    else:
        ids = torch.randint(0, arch.vocab, (tokens,), device=dev)
        pos = torch.arange(ctx, device=dev).repeat(batch)
        last = torch.arange(batch, device=dev) * ctx + ctx - 1

        def step():
            return dec.forward(ids, pos, lambda i, q, k, v: dec.attn_prefill(
                i, q, k, v, batch, ctx, regions, backend), last_idx=last)
        # GPU time: the step replayed from a CUDA graph; the eager figure beside it shows
        # where host launch time (Python, ~1,000 launches) exceeds the GPU time.
        ms_eager = dist.max(bench(step, graph=False, warmup=2, reps=10).median)
        tm = bench(step, graph=True, warmup=2, reps=max(10, args.reps))
        ms_graph = tm.median
        row["cuda_graph"] = True
    ms = dist.max(tm.median)
    flops = step_flops(dec, phase, batch, ctx)
    kv_bytes = arch.layers * tokens * 2 * dec.kv_per_token * 2  # decode: read; prefill: written
    streamed = dec.streamed_weight_bytes() + (kv_bytes if phase == "decode" else 0)
    row.update(ms=ms, ms_eager=ms_eager, ms_graph=ms_graph, ms_min=min(tm.ms),
               spread=tm.spread, reps=len(tm.ms), flops=flops, tflops=flops / ms / 1e9,
               weight_bytes=dec.weight_bytes(), kv_bytes=kv_bytes,
               weight_kv_gbps=streamed / ms / 1e6, **tm.clocks)
    return row


def run_model(name, args, dist, facts, budget, steps_out, ops_out) -> None:
    print = builtins.print if dist.rank == 0 else (lambda *a, **k: None)  # noqa: A001
    arch = ARCHS["tiny" if args.tiny else name]
    tp = dist.world
    decode = sorted(((b, c) for b in ints(args.decode_batches) for c in ints(args.decode_ctx)),
                    key=lambda bc: (bc[0] * bc[1], bc[0]))
    prefill = [tuple(int(v) for v in item.split("x")) for item in args.prefill.split(",") if item]
    need = max([b * c for b, c in decode] + [b * s for b, s in prefill])
    buf = kv_buffer_tokens(arch, tp, need, args.mem_margin_gib)
    max_pos = max(ints(args.decode_ctx) + [s for _, s in prefill]) + 1
    t0 = time.monotonic()
    dec = Decoder(arch, tp=tp, rank=dist.rank, group=dist.group, kv_buffer_tokens=buf,
                  max_pos=max_pos, compile_elementwise=not args.no_compile, device=_dev())
    total_mem = torch.cuda.get_device_properties(dist.local).total_memory if _dev() == "cuda" else 0
    print(f"[{name} tp{tp}] weights {dec.weight_bytes() / 2**30:.1f} GiB/GPU, KV buffer "
          f"{buf} tokens ({dec.kv.numel() * 2 / 2**30:.1f} GiB), element-wise {dec.elementwise_mode},"
          f" cuDNN GQA {dec.cudnn_gqa}, set up in {time.monotonic() - t0:.0f} s", flush=True)
    ops = OpTimer(dec, reps=10, enabled=not args.no_ops)
    base = {"hardware": hardware_name(), "model": name, "tp": tp,
            "elementwise_mode": dec.elementwise_mode, **facts}
    state = {"graph": True}  # decode falls back to eager once if a capture is refused
    for phase, items in (("prefill", prefill), ("decode", decode)):
        for batch, ctx in items:
            if batch * ctx > buf:
                print(f"  skip {phase} {batch}x{ctx}: {batch * ctx} KV tokens > buffer {buf}")
                continue
            if dist.any(budget.spent()):
                print(f"  budget spent: {phase} {batch}x{ctx} and larger not measured")
                break
            row = measure_config(dec, ops, dist, args, state, base, ops_out, phase, batch, ctx)
            row["kv_fits_real"] = total_mem == 0 or row["weight_bytes"] + row["kv_bytes"] <= (
                0.9 * total_mem)
            if dist.rank == 0:
                steps_out.write(row)
            print(f"  {phase:7s} b={batch:<4d} ctx={ctx:<6d} {row['ms']:9.3f} ms  ops-sum "
                  f"{row.get('ms_ops_sum', float('nan')):9.3f}  {row['tflops']:7.1f} TFLOP/s  "
                  f"{row['weight_kv_gbps']:7.0f} GB/s  attn {row['attn_backend']:5s} "
                  f"regions={row['kv_regions']}", flush=True)
            free_cuda_memory()
    del dec, ops
    free_cuda_memory()


def main():
    args = parse_args()
    if args.tiny:
        args.decode_batches, args.decode_ctx = "1,2,8", "16,64"
        args.prefill, args.reps = "1x32,2x16", 10
    dist = Dist()
    facts = machine_facts(dist.local)
    prefix = args.prefix or hardware_name()
    on0 = dist.rank == 0
    steps_out = RowWriter(os.path.join(args.out_dir, f"{prefix}_steps.csv"), STEP_COLUMNS, on0)
    ops_out = RowWriter(os.path.join(args.out_dir, f"{prefix}_ops.csv"), OP_COLUMNS, on0)
    if on0:
        print(describe_device(), facts, flush=True)
    budget_end = time.monotonic() + args.budget_s
    models = args.models.split(",")
    for i, name in enumerate(models):
        share = (budget_end - time.monotonic()) / (len(models) - i)
        run_model(name, args, dist, facts, Budget(share), steps_out, ops_out)
    if dist.rank == 0:
        print(f"wrote {steps_out.count} step rows, {ops_out.count} op rows", flush=True)
    if dist.world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
