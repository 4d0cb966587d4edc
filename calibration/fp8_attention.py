"""Paged attention over a bf16 or FP8 (e4m3) KV cache, written in Triton the way vLLM's
Triton backend does it (vllm/v1/attention/ops/triton_unified_attention.py,
vllm/v1/attention/backends/triton_attn.py): one kernel for prefill and decode, the query
heads that share a KV head packed into one tile of rows, keys gathered page by page through
the block table, and an FP8 cache read as FP8 bytes and dequantised in registers
(`k.to(float32) * k_scale`) before bf16 tensor-core products. Decode splits each sequence's
keys into segments (flash-decoding) and a second kernel merges them.

`f16=True` (FP8 cache only) is a leaner variant of the same kernel: FP8 converted straight to
fp16 and the scales applied to the products rather than to every element (q.(s k) = s (q.k)),
so the conversion costs less ALU work per byte; it shows what the FP8 path costs when
dequantisation is not the bottleneck.

This is not vLLM's code: it is an independent kernel of the same design, so that the cost of
an FP8 KV cache is measured on a kernel that reads FP8 from HBM, not SDPA over a dequantised
copy. FlashAttention-3's FP8 path (query quantised too, FP8 matrix products) is faster in
prefill and cannot be built on the measuring machine; see calibration/README.md.

Layouts (vLLM's "flash" layout): q [T, Hq, D] (T = all query tokens, sequences back to back),
k/v cache [num_pages, PAGE, Hkv, D], block_table [B, pages per sequence] int32,
seq_lens [B] (tokens in cache including the new ones), q_start [B + 1] (prefix sums of the
query lengths). Output [T, Hq, D] bf16.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl


@triton.jit
def _attn_kernel(
    Q, K, V, O, PO, PL, BT, SEQ, QSTART, k_scale, v_scale, sm_scale,
    stride_bt, seg_len,
    HQ: tl.constexpr, HKV: tl.constexpr, G: tl.constexpr, D: tl.constexpr,
    PAGE: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_M: tl.constexpr, TILE: tl.constexpr,
    NSEG: tl.constexpr, FP8: tl.constexpr, F16: tl.constexpr,
):
    b = tl.program_id(0)
    qb = tl.program_id(1)
    hs = tl.program_id(2)
    h = hs // NSEG
    seg = hs % NSEG
    q0 = tl.load(QSTART + b)
    q_len = tl.load(QSTART + b + 1) - q0
    if qb * BLOCK_Q >= q_len:
        return
    seq_len = tl.load(SEQ + b)
    m = tl.arange(0, BLOCK_M)
    t = qb * BLOCK_Q + m // G  # query token within the sequence
    g = m % G
    row_ok = (t < q_len) & (m < BLOCK_Q * G)
    qpos = seq_len - q_len + t  # position of each query row (causal bound)
    d = tl.arange(0, D)
    head = h * G + g
    q = tl.load(Q + ((q0 + t) * HQ + head)[:, None] * D + d[None, :], mask=row_ok[:, None], other=0.0)
    if F16:  # fp16 products: e4m3 -> fp16 is one conversion per pair of values on Hopper
        q = q.to(tl.float16)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D], tl.float32)
    # Keys this program visits: its segment of the sequence, up to the last query's position.
    last = tl.minimum(seq_len, seq_len - q_len + qb * BLOCK_Q + BLOCK_Q)
    lo = seg * seg_len
    hi = tl.minimum(last, lo + seg_len)
    ks = k_scale
    vs = v_scale
    for start in range(lo, hi, TILE):
        n = start + tl.arange(0, TILE)
        n_ok = n < hi
        page = tl.load(BT + b * stride_bt + n // PAGE, mask=n_ok, other=0)
        slot = (page.to(tl.int64) * PAGE + n % PAGE) * HKV + h
        k = tl.load(K + slot[:, None] * D + d[None, :], mask=n_ok[:, None], other=0.0)
        v = tl.load(V + slot[:, None] * D + d[None, :], mask=n_ok[:, None], other=0.0)
        if F16:  # scales factored out of the products: q.(ks k) = ks (q.k), sum p (vs v) = vs sum p v
            k = k.to(tl.float16)
            v = v.to(tl.float16)
            s = tl.dot(q, tl.trans(k)) * (sm_scale * ks)
        else:
            if FP8:  # vLLM's Triton backend: to float32, times the scale, to the query's dtype
                k = (k.to(tl.float32) * ks).to(tl.bfloat16)
                v = (v.to(tl.float32) * vs).to(tl.bfloat16)
            s = tl.dot(q, tl.trans(k)) * sm_scale
        ok = n_ok[None, :] & (n[None, :] <= qpos[:, None])
        s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp(s - m_safe[:, None])
        alpha = tl.exp(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    if F16:
        acc = acc * vs
    out_rows = (q0 + t) * HQ + head
    if NSEG == 1:
        o = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
        tl.store(O + out_rows[:, None] * D + d[None, :], o.to(tl.bfloat16), mask=row_ok[:, None])
    else:
        prow = out_rows * NSEG + seg
        tl.store(PO + prow[:, None] * D + d[None, :], acc, mask=row_ok[:, None])
        lse = tl.where(l_i == 0.0, float("-inf"), m_i + tl.log(tl.where(l_i == 0.0, 1.0, l_i)))
        tl.store(PL + prow * 2, lse, mask=row_ok)
        tl.store(PL + prow * 2 + 1, l_i, mask=row_ok)


@triton.jit
def _merge_kernel(PO, PL, O, NSEG: tl.constexpr, D: tl.constexpr):
    """Combine the segments of one (token, head) row: weights exp(lse_s - max lse)."""
    r = tl.program_id(0)
    s = tl.arange(0, NSEG)
    d = tl.arange(0, D)
    lse = tl.load(PL + (r * NSEG + s) * 2)
    mx = tl.max(lse, 0)
    w = tl.where(lse == float("-inf"), 0.0, tl.exp(lse - mx))
    acc = tl.load(PO + (r * NSEG + s)[:, None] * D + d[None, :])  # unnormalised, scale exp(m_s)
    l_s = tl.load(PL + (r * NSEG + s) * 2 + 1)
    # acc_s = sum p e^{-m_s}; lse_s = m_s + log l_s  =>  acc_s / l_s * e^{lse_s - mx} weights it
    scale = w / tl.where(l_s == 0.0, 1.0, l_s)
    o = tl.sum(acc * scale[:, None], 0) / tl.sum(w, 0)
    tl.store(O + r * D + d, o.to(tl.bfloat16))


class PagedAttention:
    """One call site (shapes fixed): decode when every query length is 1, prefill otherwise.

    Buffers for the decode segments are allocated once, so a call can be captured in a CUDA
    graph. `segments` (decode only): key segments per sequence; default fills the GPU with
    about two programs per SM, as flash-decoding does.
    """

    def __init__(self, q_heads: int, kv_heads: int, head_dim: int, page: int, batch: int,
                 q_len: int, max_ctx: int, fp8: bool, device="cuda", segments: int | None = None,
                 num_sms: int | None = None, f16: bool = False):
        self.hq, self.hkv, self.d, self.page = q_heads, kv_heads, head_dim, page
        self.g = q_heads // kv_heads
        self.fp8 = fp8
        self.f16 = f16 and fp8  # the fp16-product variant exists for an FP8 cache only
        self.batch, self.q_len = batch, q_len
        decode = q_len == 1
        if num_sms is None:
            num_sms = torch.cuda.get_device_properties(0).multi_processor_count if torch.cuda.is_available() else 8
        if decode:
            self.block_q = 1
            self.tile = 64
            if segments is None:
                want = max(1, (2 * num_sms) // max(1, batch * kv_heads))
                segments = min(16, triton.next_power_of_2(want), max(1, triton.next_power_of_2(max_ctx // 256)))
            self.nseg = max(1, segments)
        else:
            self.block_q = max(1, 128 // self.g)  # 128 query rows per program, vLLM's prefill tile
            self.tile = 64
            self.nseg = 1
        self.block_m = max(16, triton.next_power_of_2(self.block_q * self.g))
        self.seg_len = -(-max_ctx // self.nseg)
        self.seg_len = -(-self.seg_len // self.tile) * self.tile
        t = batch * q_len
        self.out = torch.empty(t, q_heads, head_dim, device=device, dtype=torch.bfloat16)
        if self.nseg > 1:
            self.po = torch.empty(t * q_heads * self.nseg, head_dim, device=device, dtype=torch.float32)
            self.pl = torch.empty(t * q_heads * self.nseg * 2, device=device, dtype=torch.float32)
        else:
            self.po = self.pl = self.out  # unused
        self.q_start = torch.arange(0, batch + 1, device=device, dtype=torch.int32) * q_len
        self.sm_scale = 1.0 / math.sqrt(head_dim)
        self.num_warps = 4 if decode else 8
        self.num_stages = 3 if decode else 2

    def __call__(self, q, k_cache, v_cache, block_table, seq_lens, k_scale=1.0, v_scale=1.0):
        grid = (self.batch, -(-self.q_len // self.block_q), self.hkv * self.nseg)
        _attn_kernel[grid](
            q, k_cache, v_cache, self.out, self.po, self.pl, block_table, seq_lens, self.q_start,
            float(k_scale), float(v_scale), self.sm_scale, block_table.stride(0), self.seg_len,
            HQ=self.hq, HKV=self.hkv, G=self.g, D=self.d, PAGE=self.page, BLOCK_Q=self.block_q,
            BLOCK_M=self.block_m, TILE=self.tile, NSEG=self.nseg, FP8=self.fp8, F16=self.f16,
            num_warps=self.num_warps, num_stages=self.num_stages,
        )
        if self.nseg > 1:
            _merge_kernel[(self.batch * self.q_len * self.hq,)](
                self.po, self.pl, self.out, NSEG=self.nseg, D=self.d, num_warps=4)
        return self.out


def reference(q, k_cache, v_cache, block_table, seq_lens, q_len, k_scale=1.0, v_scale=1.0):
    """float32 attention over the same cache (dequantised), for the correctness check only."""
    b_count = block_table.shape[0]
    hq, hkv = q.shape[1], k_cache.shape[2]
    g = hq // hkv
    page = k_cache.shape[1]
    outs = []
    for b in range(b_count):
        n = int(seq_lens[b])
        pages = block_table[b, : -(-n // page)].long()
        k = _pages(k_cache, pages).reshape(-1, hkv, k_cache.shape[3])[:n] * k_scale
        v = _pages(v_cache, pages).reshape(-1, hkv, k_cache.shape[3])[:n] * v_scale
        qb = q[b * q_len:(b + 1) * q_len].float()  # [L, Hq, D]
        k = k.repeat_interleave(g, dim=1)
        v = v.repeat_interleave(g, dim=1)
        s = torch.einsum("lhd,nhd->hln", qb, k) / math.sqrt(q.shape[2])
        pos = torch.arange(n - q_len, n, device=q.device)[:, None]
        s = s.masked_fill(torch.arange(n, device=q.device)[None, :] > pos, float("-inf"))
        outs.append(torch.einsum("hln,nhd->lhd", s.softmax(-1), v))
    return torch.cat(outs)


def _pages(cache, pages):
    """cache[pages] as float32; fp8 tensors are indexed through their bytes."""
    raw = {1: torch.uint8, 2: torch.int16}[cache.element_size()]
    return cache.view(raw)[pages].view(cache.dtype).float()
