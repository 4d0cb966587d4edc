"""GPU time of whole FP8 engine steps of Llama-3.1-8B on one GPU, in the style of
measure_steps.py (CUDA-graph replays of the whole forward). See calibration/README.md, "FP8".

  python3 calibration/measure_fp8_steps.py --out-dir $OUT [--precisions fp8_kv,fp8,bf16_kv8]

Precisions (the simulator's configs/precision names):
- `fp8`: W8A8 FP8 (e4m3) projections through torch._scaled_mm with per-tensor scales
  (static activation scales, as vLLM runs static-scale FP8 checkpoints), bf16 KV cache,
  attention as measure_steps.py (SDPA: FA2 at batch x KV heads <= 64 in decode, else cuDNN).
- `fp8_kv`: the same projections with an FP8 KV cache, attention through the paged Triton
  kernel of fp8_attention.py (reads FP8, dequantises in registers, vLLM's Triton backend).
- `bf16_kv8`: bf16 projections (cuBLAS) with the FP8 KV cache and the same Triton attention.
The activation quantisation to FP8 is fused into the element-wise kernel before each GEMM
(RMSNorm, SiLU-mul) by Inductor, as vLLM's compile passes fuse it; the attention output is
quantised by its own kernel. The LM head stays bf16 (vLLM does not quantise it). The KV write
is an index copy into the pages (vLLM's reshape_and_cache_flash).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from calib_common import ARCHS, Budget, RowWriter, bench, describe_device, free_cuda_memory
from calib_common import hardware_name, machine_facts
from calib_model import Decoder, add_rmsnorm, rmsnorm, silu_mul
from measure_steps import kv_buffer_tokens, step_flops

FP8 = torch.float8_e4m3fn
PAGE = 16
COLUMNS = ["phase", "batch", "ctx", "tokens", "ms", "hardware", "model", "tp", "precision",
           "cuda_graph", "ms_min", "spread", "reps", "flops", "tflops", "weight_bytes", "kv_bytes",
           "weight_kv_gbps", "kv_regions", "attn_kernel", "gpu", "driver", "torch", "cuda",
           "sm_clock_mhz", "mem_clock_mhz", "power_w", "temp_c", "max_sm_clock_mhz", "power_limit_w"]


def _q(t):  # static unit activation scale: saturate, cast
    return t.clamp(-448.0, 448.0).to(FP8)


def rmsnorm_q(x, w, eps: float):
    return _q(rmsnorm(x, w, eps))


def add_rmsnorm_q(x, residual, w, eps: float):
    y, r = add_rmsnorm(x, residual, w, eps)
    return _q(y), r


def silu_mul_q(gate_up):
    return _q(silu_mul(gate_up))


class Fp8Decoder(Decoder):
    """Decoder with FP8 projections (`weights_fp8`) and/or a paged FP8 KV cache (`kv_fp8`)."""

    def __init__(self, arch, *, weights_fp8: bool, kv_fp8: bool, kv_tokens: int, max_pos: int):
        bf16_kv = 1 if kv_fp8 else kv_tokens
        super().__init__(arch, kv_buffer_tokens=bf16_kv, max_pos=max_pos)
        self.weights_fp8, self.kv_fp8 = weights_fp8, kv_fp8
        self.one = torch.ones((), device="cuda", dtype=torch.float32)
        if weights_fp8:
            for L in self.layers:
                for name in ("qkv", "o", "gate_up", "down"):
                    w = L.pop(name)
                    scale = (w.abs().amax().float() / 448.0).clamp(min=1e-12)
                    L[name + "8"] = ((w / scale).to(FP8).t(), scale)  # [in, out] column-major
            free_cuda_memory()
            self.pad16 = not self._scaled_mm_takes(1)
            eager = {"rmsnorm": rmsnorm_q, "add_rmsnorm": add_rmsnorm_q, "silu_mul": silu_mul_q,
                     "quant": _q}
            self.q_ew = {k: torch.compile(f) for k, f in eager.items()}
        if kv_fp8:
            self.kv = None
            per_layer_token = 2 * self.n_kv * arch.head_dim  # K and V, one byte each
            self.regions = max(1, min(arch.layers, kv_tokens // max(1, self._need)))
            pages = self._need // PAGE + 1
            shape = (self.regions, pages, PAGE, self.n_kv, arch.head_dim)
            self.kcache = torch.empty(shape, device="cuda", dtype=torch.uint8).view(FP8)
            self.vcache = torch.empty(shape, device="cuda", dtype=torch.uint8).view(FP8)
            for r in range(self.regions):  # random values, one region at a time (no bf16 copy of all)
                for c in (self.kcache, self.vcache):
                    c[r].view(torch.uint8).copy_(torch.randn(shape[1:], device="cuda",
                                                             dtype=torch.bfloat16).to(FP8).view(torch.uint8))
            self.k_scale = self.v_scale = 0.05
            self.kv_layer_token_bytes = per_layer_token

    _need = 1  # KV tokens of the largest config; set before construction

    def _scaled_mm_takes(self, m: int) -> bool:
        w8, s = self.layers[0]["o8"]
        try:
            torch._scaled_mm(torch.zeros(m, w8.shape[0], device="cuda").to(FP8), w8,
                             scale_a=self.one, scale_b=s, out_dtype=torch.bfloat16)
            torch.cuda.synchronize()
            return True
        except RuntimeError:
            return False

    def linear(self, x, L, name):
        if not self.weights_fp8:
            return F.linear(x, L[name])
        w8, s = L[name + "8"]
        t = x.shape[0]
        if self.pad16 and t < 16:
            x = F.pad(x.view(torch.uint8), (0, 0, 0, 16 - t)).view(FP8)
        y = torch._scaled_mm(x, w8, scale_a=self.one, scale_b=s, out_dtype=torch.bfloat16)
        return y[:t] if y.shape[0] != t else y

    def forward(self, ids, positions, attend, last_idx=None):
        eps, d = self.arch.rms_eps, self.arch.head_dim
        ew = self.q_ew if self.weights_fp8 else self.ew
        t = ids.shape[0]
        h = F.embedding(ids, self.embed)
        residual = None
        for i, L in enumerate(self.layers):
            if residual is None:
                x, residual = ew["rmsnorm"](h, L["ln1"], eps), h
            else:
                x, residual = ew["add_rmsnorm"](h, residual, L["ln1"], eps)
            qkv = self.linear(x, L, "qkv")
            q, k = self.ew["rope"](qkv, positions, self.cos, self.sin)
            v = qkv[:, (self.n_q + self.n_kv) * d:].view(t, self.n_kv, d)
            o = attend(i, q, k, v)
            if self.weights_fp8:
                o = ew["quant"](o)
            h = self.linear(o, L, "o")
            x, residual = ew["add_rmsnorm"](h, residual, L["ln2"], eps)
            h = self.linear(ew["silu_mul"](self.linear(x, L, "gate_up")), L, "down")
        x, _ = self.ew["add_rmsnorm"](h, residual, self.final_norm, eps)
        if last_idx is not None:
            x = x[last_idx]
        return F.linear(x, self.lm_head)

    f16 = False  # the fp16-product attention variant (fp8_attention.py)

    def paged(self, phase, batch, ctx):
        """The attention closure of a paged FP8 cache for one step shape."""
        from fp8_attention import PagedAttention

        q_len = 1 if phase == "decode" else ctx
        attn = PagedAttention(self.n_q, self.n_kv, self.arch.head_dim, PAGE, batch, q_len, ctx, True,
                              f16=self.f16)
        pps = -(-ctx // PAGE)
        pages = self.kcache.shape[1]
        table = torch.randperm(pages - 1, device="cuda")[: batch * pps].to(torch.int32).view(batch, pps)
        seq = torch.full((batch,), ctx, device="cuda", dtype=torch.int32)
        pos = torch.arange(ctx - q_len, ctx, device="cuda")
        tok_page = table[:, (pos // PAGE)].long()  # [B, q_len]
        slots = (tok_page * PAGE + (pos % PAGE)[None, :]).reshape(-1)
        d, ks, vs = self.arch.head_dim, self.k_scale, self.v_scale

        def attend(i, q, k, v):
            r = i % self.regions
            kc = self.kcache[r].view(torch.uint8).view(-1, self.n_kv, d)
            vc = self.vcache[r].view(torch.uint8).view(-1, self.n_kv, d)
            kc.index_copy_(0, slots, (k / ks).to(FP8).view(torch.uint8))
            vc.index_copy_(0, slots, (v / vs).to(FP8).view(torch.uint8))
            qh = q.view(-1, self.n_q, d)
            return attn(qh, self.kcache[r], self.vcache[r], table, seq, ks, vs).view(-1, self.n_q * d)

        return attend


def measure(dec, precision, phase, batch, ctx, base, args) -> dict:
    arch = dec.arch
    tokens = batch if phase == "decode" else batch * ctx
    kv_tokens = batch * ctx
    if dec.kv_fp8:
        attend, regions = dec.paged(phase, batch, ctx), dec.regions
        kernel = "triton_paged_fp8_f16" if dec.f16 else "triton_paged_fp8"
    else:
        regions = dec.kv_regions(kv_tokens)
        if phase == "decode":
            backend = "flash" if batch * dec.n_kv <= 64 else "cudnn"

            def attend(i, q, k, v):
                return dec.attn_decode(i, q, k, v, batch, ctx, regions, backend)
        else:
            backend = "cudnn"

            def attend(i, q, k, v):
                return dec.attn_prefill(i, q, k, v, batch, ctx, regions, backend)
        kernel = f"sdpa_{backend}"
    if phase == "decode":
        ids = torch.randint(0, arch.vocab, (batch,), device="cuda")
        pos = torch.full((batch,), ctx - 1, device="cuda")
        last = None
    else:
        ids = torch.randint(0, arch.vocab, (tokens,), device="cuda")
        pos = torch.arange(ctx, device="cuda").repeat(batch)
        last = torch.arange(batch, device="cuda") * ctx + ctx - 1
    tm = bench(lambda: dec.forward(ids, pos, attend, last), graph=True, warmup=args.warmup, reps=args.reps)
    kv_elem = 1 if dec.kv_fp8 else 2
    kv_bytes = arch.layers * kv_tokens * 2 * dec.n_kv * arch.head_dim * kv_elem
    w_elem = 1 if dec.weights_fp8 else 2
    per_layer = arch.hidden * (dec.qkv_out + dec.n_q * arch.head_dim + 3 * dec.ffn)
    weight_bytes = per_layer * arch.layers * w_elem + 2 * arch.vocab * arch.hidden * 2
    streamed = weight_bytes - arch.vocab * arch.hidden * 2 + (kv_bytes if phase == "decode" else 0)
    flops = step_flops(dec, phase, batch, ctx)
    return dict(base, phase=phase, batch=batch, ctx=ctx, tokens=tokens, ms=tm.median,
                precision=precision, cuda_graph=True, ms_min=min(tm.ms), spread=tm.spread,
                reps=len(tm.ms), flops=flops, tflops=flops / tm.median / 1e9,
                weight_bytes=weight_bytes, kv_bytes=kv_bytes, weight_kv_gbps=streamed / tm.median / 1e6,
                kv_regions=regions, attn_kernel=kernel, **tm.clocks)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", default=os.environ.get("OUT", "calibration/data"))
    p.add_argument("--prefix", default=None)
    p.add_argument("--precisions", default="fp8_kv,fp8,bf16_kv8")
    p.add_argument("--decode-batches", default="1,8,32,128,256")
    p.add_argument("--decode-ctx", default="1024,4096")
    p.add_argument("--prefill", default="1x512,1x2048,1x8192,4x1024")
    p.add_argument("--budget-s", type=float, default=150.0)
    p.add_argument("--f16-attention", action="store_true", help="fp16-product FP8 attention")
    p.add_argument("--suffix", default="", help="appended to the CSV name")
    p.add_argument("--reps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args()
    arch = ARCHS["llama3_8b"]
    facts = machine_facts()
    prefix = args.prefix or hardware_name()
    out = RowWriter(os.path.join(args.out_dir, f"{prefix}_fp8_steps{args.suffix}.csv"), COLUMNS)
    print(describe_device(), facts, flush=True)
    decode = sorted(((int(b), int(c)) for b in args.decode_batches.split(",") for c in args.decode_ctx.split(",")),
                    key=lambda bc: bc[0] * bc[1])
    prefill = [tuple(int(v) for v in item.split("x")) for item in args.prefill.split(",")]
    need = max([b * c for b, c in decode] + [b * s for b, s in prefill])
    max_pos = max([c for _, c in decode] + [s for _, s in prefill]) + 1
    end = time.monotonic() + args.budget_s
    precisions = args.precisions.split(",")
    for n, precision in enumerate(precisions):
        budget = Budget((end - time.monotonic()) / (len(precisions) - n))
        weights_fp8 = precision in ("fp8", "fp8_kv")
        kv_fp8 = precision in ("fp8_kv", "bf16_kv8")
        free, _ = torch.cuda.mem_get_info()
        if kv_fp8:
            room = free - 30 * 2**30  # bf16 weights before quantising, activations, a margin
            kv_tokens = max(need, room // (2 * arch.kv_heads * arch.head_dim))
        else:
            kv_tokens = kv_buffer_tokens(arch, 1, need, 6.0)
        Fp8Decoder._need = need
        Fp8Decoder.f16 = args.f16_attention
        t0 = time.monotonic()
        try:
            dec = Fp8Decoder(arch, weights_fp8=weights_fp8, kv_fp8=kv_fp8, kv_tokens=kv_tokens, max_pos=max_pos)
        except Exception as e:  # noqa: BLE001
            print(f"[{precision}] set-up failed: {e!r}"[:400], flush=True)
            free_cuda_memory()
            continue
        print(f"[{precision}] set up in {time.monotonic() - t0:.0f} s, regions "
              f"{getattr(dec, 'regions', None) or dec.kv_regions(need)}", flush=True)
        base = {"hardware": hardware_name(), "model": "llama3_8b", "tp": 1, **facts}
        for phase, items in (("decode", decode), ("prefill", prefill)):
            for batch, ctx in items:
                if budget.spent():
                    print(f"  [{precision}] budget spent before {phase} {batch}x{ctx}")
                    break
                try:
                    row = measure(dec, precision, phase, batch, ctx, base, args)
                except Exception as e:  # noqa: BLE001 - keep the other shapes
                    print(f"  [{precision}] {phase} {batch}x{ctx}: {e!r}"[:400], flush=True)
                    free_cuda_memory()
                    continue
                out.write(row)
                print(f"  [{precision}] {phase:7s} b={batch:<4d} ctx={ctx:<6d} {row['ms']:9.3f} ms "
                      f"{row['tflops']:7.1f} TFLOP/s {row['weight_kv_gbps']:7.0f} GB/s {row['attn_kernel']}",
                      flush=True)
                free_cuda_memory()
        del dec
        free_cuda_memory()
    print(f"wrote {out.count} fp8 step rows", flush=True)


if __name__ == "__main__":
    main()
