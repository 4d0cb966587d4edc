"""A Llama-shaped decoder with random bf16 weights, run the way a vLLM-like engine runs it.

Per layer: fused add+RMSNorm, fused QKV projection (+bias for Qwen2), RoPE on q and k, KV-cache
write, attention, O projection (+all-reduce under TP), fused add+RMSNorm, fused gate_up
projection, SiLU-and-mul, down projection (+all-reduce). Then the final norm and the LM head
on the last position of each sequence only. Weights are nn.Linear-shaped [out, in] and run
through F.linear (cuBLAS), as vLLM's unquantized linear layers do.

Element-wise pieces are plain PyTorch functions compiled with torch.compile (Inductor fuses
each into one or two Triton kernels); vLLM v1 does the same by default, its RMSNorm, SiLU-mul
and RoPE being native PyTorch compiled by Inductor. If compiling fails they run eagerly (more,
unfused kernels); `Decoder.elementwise_mode` says which.

KV cache: one buffer holds `n_regions` per-layer K/V regions of batch x ctx tokens; layer l
uses region l % n_regions. When the buffer has room for all layers, this is a real per-layer
cache; otherwise layers share regions (at worst all share one). Each region read per layer
still comes from HBM: a shared region is re-read only after a whole layer's weights (hundreds
of MB, many times the 50-60 MB L2) have streamed through the cache.

Tensor parallelism (tp > 1, torch.distributed initialised): heads, KV heads, FFN and vocab are
split as vLLM splits them; one all-reduce after the O projection and one after the down
projection per layer, one after the vocab-parallel embedding, an all-gather of the logits.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from calib_common import Arch

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # pragma: no cover - very old torch
    sdpa_kernel = None


ATTN_BACKENDS = ("flash", "cudnn")  # the SDPA kernels a step chooses between


def attention_context(backend: str):
    """Pin SDPA to one kernel on CUDA: "flash" (PyTorch's FlashAttention-2) or "cudnn"
    (cuDNN's fused attention). On the CPU smoke test PyTorch picks whatever it has."""
    if torch.cuda.is_available() and sdpa_kernel is not None:
        return sdpa_kernel([{"flash": SDPBackend.FLASH_ATTENTION,
                             "cudnn": SDPBackend.CUDNN_ATTENTION}[backend]])
    return contextlib.nullcontext()


def cudnn_takes_gqa(device) -> bool:
    """Whether cuDNN SDPA accepts fewer KV heads than query heads (enable_gqa) here; if not,
    a step repeats the KV heads for it (a copy, counted in the attention time)."""
    if not torch.cuda.is_available():
        return True
    q = torch.randn(1, 8, 256, 128, device=device, dtype=torch.bfloat16)
    kv = torch.randn(1, 2, 256, 128, device=device, dtype=torch.bfloat16)
    try:
        with attention_context("cudnn"):
            F.scaled_dot_product_attention(q, kv, kv, is_causal=True, enable_gqa=True)
        torch.cuda.synchronize()
        return True
    except RuntimeError:
        return False


# ---- element-wise functions (compiled by Inductor when possible) ----------------------------


def rmsnorm(x, w, eps: float):
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (y * w.float()).to(x.dtype)


def add_rmsnorm(x, residual, w, eps: float):
    """vLLM's fused_add_rms_norm: returns norm(x + residual) and the new residual."""
    r = x.float() + residual.float()
    y = r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + eps)
    return (y * w.float()).to(x.dtype), r.to(x.dtype)


def silu_mul(gate_up):
    g, u = gate_up.chunk(2, dim=-1)
    return (F.silu(g.float()) * u.float()).to(gate_up.dtype)


def make_rope(n_q: int, n_kv: int, head_dim: int):
    """Neox-style rotary embedding of the q and k parts of the fused QKV output."""
    half = head_dim // 2

    def rope(qkv, positions, cos_table, sin_table):
        t = qkv.shape[0]
        cos = cos_table[positions].unsqueeze(1)  # [T, 1, half]
        sin = sin_table[positions].unsqueeze(1)
        qk = qkv[:, : (n_q + n_kv) * head_dim].view(t, n_q + n_kv, head_dim).float()
        x1, x2 = qk[..., :half], qk[..., half:]
        out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(qkv.dtype)
        return out[:, :n_q].contiguous(), out[:, n_q:].contiguous()

    return rope


def elementwise_fns(arch: Arch, n_q: int, n_kv: int, compile_: bool):
    """The element-wise functions, compiled if asked and if compiling works here."""
    eager = {
        "rmsnorm": rmsnorm,
        "add_rmsnorm": add_rmsnorm,
        "silu_mul": silu_mul,
        "rope": make_rope(n_q, n_kv, arch.head_dim),
    }
    if not compile_:
        return eager, "eager"
    import torch._dynamo as dynamo

    for knob in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(dynamo.config, knob):
            setattr(dynamo.config, knob, 256)
    compiled = {k: torch.compile(f) for k, f in eager.items()}
    try:
        _check_compiled(compiled, eager, arch, n_q, n_kv)
    except Exception as e:  # noqa: BLE001 - any compile failure: measure eagerly instead
        print(f"torch.compile of the element-wise functions failed, running them eagerly: {e!r}")
        return eager, "eager"
    return compiled, "inductor"


def _check_compiled(compiled, eager, arch: Arch, n_q: int, n_kv: int) -> None:
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    d = arch.head_dim
    cos, sin = rope_tables(64, d, dev)
    for t in (1, 3, 17):  # 1 is specialised; 3 then 17 trigger the dynamic-shape compile
        x = torch.randn(t, arch.hidden, device=dev, dtype=torch.bfloat16)
        r = torch.randn_like(x)
        w = torch.randn(arch.hidden, device=dev, dtype=torch.bfloat16)
        gu = torch.randn(t, 64, device=dev, dtype=torch.bfloat16)
        qkv = torch.randn(t, (n_q + 2 * n_kv) * d, device=dev, dtype=torch.bfloat16)
        pos = torch.randint(0, 64, (t,), device=dev)
        pairs = [
            (compiled["rmsnorm"](x, w, 1e-5), eager["rmsnorm"](x, w, 1e-5)),
            (compiled["add_rmsnorm"](x, r, w, 1e-5), eager["add_rmsnorm"](x, r, w, 1e-5)),
            (compiled["silu_mul"](gu), eager["silu_mul"](gu)),
            (compiled["rope"](qkv, pos, cos, sin), eager["rope"](qkv, pos, cos, sin)),
        ]
        for got, want in pairs:
            got = got if isinstance(got, tuple) else (got,)
            want = want if isinstance(want, tuple) else (want,)
            for a, b in zip(got, want):
                err = (a.float() - b.float()).norm() / b.float().norm()
                if not err < 2e-2:
                    raise AssertionError(f"compiled element-wise result differs: {err}")


def rope_tables(max_pos: int, head_dim: int, device, theta: float = 500000.0):
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim)
    ang = torch.arange(max_pos, device=device).float()[:, None] * inv[None, :]
    return ang.cos(), ang.sin()


# ---- the model ----------------------------------------------------------------------------


class Decoder:
    """Weights, KV buffer and the two step kinds (decode, prefill) of one TP rank."""

    def __init__(self, arch: Arch, *, tp: int = 1, rank: int = 0, group=None,
                 kv_buffer_tokens: int, max_pos: int, compile_elementwise: bool = True,
                 device: str = "cuda", dtype=torch.bfloat16):
        self.arch, self.tp, self.rank, self.group = arch, tp, rank, group
        self.device, self.dtype = device, dtype
        self.n_q = arch.heads // tp
        self.n_kv = max(1, arch.kv_heads // tp)  # vLLM replicates KV heads when tp > kv_heads
        self.group_size = self.n_q // self.n_kv
        self.ffn = arch.ffn // tp
        self.vocab = math.ceil(arch.vocab / tp)
        self.vocab_start = rank * self.vocab
        d, h = arch.head_dim, arch.hidden
        self.qkv_out = (self.n_q + 2 * self.n_kv) * d

        def w(*shape):
            return torch.empty(*shape, device=device, dtype=dtype).normal_(0.0, 0.02)

        self.layers = []
        for _ in range(arch.layers):
            self.layers.append({
                "ln1": 1.0 + w(h), "ln2": 1.0 + w(h),
                "qkv": w(self.qkv_out, h), "qkv_b": w(self.qkv_out) if arch.qkv_bias else None,
                "o": w(h, self.n_q * d), "gate_up": w(2 * self.ffn, h), "down": w(h, self.ffn),
            })
        self.embed = w(self.vocab, h)
        self.lm_head = w(self.vocab, h)
        self.final_norm = 1.0 + w(h)
        self.cos, self.sin = rope_tables(max_pos, d, device)
        self.kv_per_token = self.n_kv * d  # elements of K (or V) per token per layer
        self.kv_buffer_tokens = kv_buffer_tokens
        self.kv = torch.empty(2, kv_buffer_tokens * self.kv_per_token, device=device,
                              dtype=dtype).normal_()
        self.cudnn_gqa = cudnn_takes_gqa(device)
        self.ew, self.elementwise_mode = elementwise_fns(arch, self.n_q, self.n_kv,
                                                         compile_elementwise)

    # -- sizes --
    def weight_bytes(self) -> int:
        per_layer = sum(t.numel() for t in self.layers[0].values() if t is not None)
        return (per_layer * self.arch.layers + self.embed.numel() + self.lm_head.numel()) * 2

    def streamed_weight_bytes(self) -> int:
        """Weights a step reads in full: all but the embedding table (only looked up)."""
        return self.weight_bytes() - self.embed.numel() * 2

    def kv_regions(self, tokens: int) -> int:
        """How many per-layer KV regions of `tokens` tokens the buffer holds (<= layers)."""
        return min(self.arch.layers, self.kv_buffer_tokens // tokens)

    def kv_view(self, region: int, batch: int, ctx: int):
        n = batch * ctx * self.kv_per_token
        k = self.kv[0, region * n:(region + 1) * n].view(batch, self.n_kv, ctx, self.arch.head_dim)
        v = self.kv[1, region * n:(region + 1) * n].view(batch, self.n_kv, ctx, self.arch.head_dim)
        return k, v

    # -- pieces --
    def all_reduce(self, x):
        if self.tp > 1:
            torch.distributed.all_reduce(x, group=self.group)
        return x

    def embed_tokens(self, ids):
        if self.tp == 1:
            return F.embedding(ids, self.embed)
        local = ids - self.vocab_start
        mask = (local >= 0) & (local < self.vocab)
        x = F.embedding(local.clamp(0, self.vocab - 1), self.embed) * mask.unsqueeze(1)
        return self.all_reduce(x)

    def logits(self, x_last):
        out = F.linear(x_last, self.lm_head)
        if self.tp == 1:
            return out
        full = torch.empty(self.tp, *out.shape, device=out.device, dtype=out.dtype)
        if out.is_cuda:  # NCCL: one capturable collective
            torch.distributed.all_gather_into_tensor(full, out, group=self.group)
        else:  # gloo (CPU smoke test) has only the list form
            torch.distributed.all_gather(list(full.unbind(0)), out, group=self.group)
        return full

    def attn_decode(self, layer: int, q, k, v, batch: int, ctx: int, regions: int,
                    backend: str = "flash"):
        """q [B, n_q, D], k/v [B, n_kv, D]: write the new token's K/V at position ctx-1, then
        attend over ctx tokens. GQA is packed: the query heads sharing a KV head become that
        head's G query rows, so each KV head is streamed once (what FlashAttention's decode
        path does internally)."""
        kc, vc = self.kv_view(layer % regions, batch, ctx)
        kc[:, :, ctx - 1].copy_(k)
        vc[:, :, ctx - 1].copy_(v)
        qp = q.view(batch, self.n_kv, self.group_size, self.arch.head_dim)
        with attention_context(backend):
            o = F.scaled_dot_product_attention(qp, kc, vc)
        return o.reshape(batch, self.n_q * self.arch.head_dim)

    def attn_prefill(self, layer: int, q, k, v, batch: int, seq: int, regions: int,
                     backend: str = "flash"):
        """Causal attention of `batch` fresh prompts of `seq` tokens; K/V also written to the
        cache (vLLM's reshape_and_cache). The [B, S, H, D] activations are passed as
        [B, H, S, D] views, which the fused kernels read without a copy."""
        t, d = batch * seq, self.arch.head_dim
        n = t * self.kv_per_token
        r = layer % regions
        self.kv[0, r * n:(r + 1) * n].view(t, self.n_kv, d).copy_(k)
        self.kv[1, r * n:(r + 1) * n].view(t, self.n_kv, d).copy_(v)
        qb = q.view(batch, seq, self.n_q, d).transpose(1, 2)
        kb = k.view(batch, seq, self.n_kv, d).transpose(1, 2)
        vb = v.view(batch, seq, self.n_kv, d).transpose(1, 2)
        gqa = self.group_size > 1
        if gqa and backend == "cudnn" and not self.cudnn_gqa:
            kb = kb.repeat_interleave(self.group_size, dim=1)
            vb = vb.repeat_interleave(self.group_size, dim=1)
            gqa = False
        with attention_context(backend):
            o = F.scaled_dot_product_attention(qb, kb, vb, is_causal=True, enable_gqa=gqa)
        return o.transpose(1, 2).reshape(t, self.n_q * d)

    # -- a whole step --
    def forward(self, ids, positions, attend, last_idx=None):
        """One engine step over T tokens; `attend(layer, q, k, v)` is the attention of the
        step's kind. Returns logits of the rows `last_idx` (all rows when None)."""
        ew, eps, d = self.ew, self.arch.rms_eps, self.arch.head_dim
        t = ids.shape[0]
        h = self.embed_tokens(ids)
        residual = None
        for i, L in enumerate(self.layers):
            if residual is None:
                x, residual = ew["rmsnorm"](h, L["ln1"], eps), h
            else:
                x, residual = ew["add_rmsnorm"](h, residual, L["ln1"], eps)
            qkv = F.linear(x, L["qkv"], L["qkv_b"])
            q, k = ew["rope"](qkv, positions, self.cos, self.sin)
            v = qkv[:, (self.n_q + self.n_kv) * d:].view(t, self.n_kv, d)
            o = attend(i, q, k, v)
            h = self.all_reduce(F.linear(o, L["o"]))
            x, residual = ew["add_rmsnorm"](h, residual, L["ln2"], eps)
            h = self.all_reduce(F.linear(ew["silu_mul"](F.linear(x, L["gate_up"])), L["down"]))
        x, _ = ew["add_rmsnorm"](h, residual, self.final_norm, eps)
        if last_idx is not None:
            x = x[last_idx]
        return self.logits(x)
