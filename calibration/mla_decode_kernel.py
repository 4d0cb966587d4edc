"""Absorbed MLA decode attention over a paged latent cache, split over the KV, in Triton.

The algorithm of vLLM 0.24.0's TRITON_MLA backend (`vllm/v1/attention/backends/mla/
triton_mla.py`, which calls `decode_attention_fwd` of `vllm/attention/ops/
triton_decode_attention.py`: the grouped stage-1 kernel and the stage-2 reduce), not its code:

- the cache holds one latent row per token, kv_lora_rank (512) + rope (64) wide, in pages of
  `page_size` tokens found through each sequence's block table; every query head attends to
  it (MQA on the latent: K = the whole row, V = its first 512);
- stage 1, grid (sequence, head block of BLOCK_H = 16 heads, KV split): each program walks
  its split's ceil(len / splits) tokens in tiles of BLOCK_N = 32, q . k on the 512 and the 64
  parts, an online softmax, and writes its partial output (512 fp32) and log-sum-exp;
  num_kv_splits = 4 as TRITON_MLA sets it, num_warps 4, num_stages 2;
- stage 2, grid (sequence, head): merges the splits by their log-sum-exp.

One difference from vLLM's kernel: the V tile is the K tile's first 512 columns, taken from
registers, where vLLM loads it again through a second view of the same cache (served by L1/L2).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

KV_LORA, ROPE = 512, 64
BLOCK_H, BLOCK_N, NUM_KV_SPLITS = 16, 32, 4


@triton.jit
def mla_split_kernel(
    q_ptr, cache_ptr, block_table_ptr, seq_lens_ptr, mid_ptr, lse_ptr, scale,
    num_heads, stride_qb, stride_qh, stride_cache, stride_bt, stride_mb, stride_mh, stride_ms,
    PAGE: tl.constexpr, SPLITS: tl.constexpr, L: tl.constexpr, R: tl.constexpr,
    BH: tl.constexpr, BN: tl.constexpr,
):  # fmt: skip
    seq, hblock, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    heads = hblock * BH + tl.arange(0, BH)
    head_ok = heads < num_heads
    offs_l, offs_r = tl.arange(0, L), L + tl.arange(0, R)
    q_base = q_ptr + seq * stride_qb + heads[:, None] * stride_qh
    q_c = tl.load(q_base + offs_l[None, :], mask=head_ok[:, None], other=0.0)
    q_r = tl.load(q_base + offs_r[None, :], mask=head_ok[:, None], other=0.0)
    seq_len = tl.load(seq_lens_ptr + seq)
    per_split = tl.cdiv(seq_len, SPLITS)
    start = split * per_split
    end = tl.minimum(start + per_split, seq_len)
    if end <= start:
        return
    m_i = tl.zeros([BH], dtype=tl.float32) - float("inf")
    l_i = tl.zeros([BH], dtype=tl.float32)
    acc = tl.zeros([BH, L], dtype=tl.float32)
    for n0 in range(start, end, BN):
        pos = n0 + tl.arange(0, BN)
        ok = pos < end
        page = tl.load(block_table_ptr + seq * stride_bt + pos // PAGE, mask=ok, other=0)
        row = (page.to(tl.int64) * PAGE + pos % PAGE) * stride_cache
        k_c = tl.load(cache_ptr + row[:, None] + offs_l[None, :], mask=ok[:, None], other=0.0)
        k_r = tl.load(cache_ptr + row[:, None] + offs_r[None, :], mask=ok[:, None], other=0.0)
        s = tl.dot(q_c, tl.trans(k_c)) + tl.dot(q_r, tl.trans(k_r))
        s = tl.where(head_ok[:, None] & ok[None, :], s * scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        acc = acc * alpha[:, None] + tl.dot(p.to(k_c.dtype), k_c)
        l_i = l_i * alpha + tl.sum(p, 1)
        m_i = m_new
    mid = mid_ptr + seq * stride_mb + heads[:, None] * stride_mh + split * stride_ms + offs_l[None, :]
    tl.store(mid, acc / l_i[:, None], mask=head_ok[:, None])
    tl.store(lse_ptr + (seq * num_heads + heads) * SPLITS + split, m_i + tl.log(l_i), mask=head_ok)


@triton.jit
def mla_reduce_kernel(
    mid_ptr, lse_ptr, seq_lens_ptr, out_ptr, num_heads,
    stride_mb, stride_mh, stride_ms, stride_ob, stride_oh,
    SPLITS: tl.constexpr, L: tl.constexpr,
):  # fmt: skip
    seq, head = tl.program_id(0), tl.program_id(1)
    seq_len = tl.load(seq_lens_ptr + seq)
    per_split = tl.cdiv(seq_len, SPLITS)
    offs = tl.arange(0, L)
    m = -float("inf")
    total = 0.0
    acc = tl.zeros([L], dtype=tl.float32)
    for split in range(0, SPLITS):
        if split * per_split < seq_len:
            lse = tl.load(lse_ptr + (seq * num_heads + head) * SPLITS + split)
            part = tl.load(mid_ptr + seq * stride_mb + head * stride_mh + split * stride_ms + offs)
            m_new = tl.maximum(m, lse)
            old = tl.exp(m - m_new)
            w = tl.exp(lse - m_new)
            acc = acc * old + w * part
            total = total * old + w
            m = m_new
    tl.store(out_ptr + seq * stride_ob + head * stride_oh + offs, (acc / total).to(out_ptr.dtype.element_ty))


class MlaDecode:
    """Buffers for one batch shape, so that a CUDA graph can capture `__call__`."""

    def __init__(self, batch: int, heads: int, device: str = "cuda", dtype=torch.bfloat16) -> None:
        self.heads = heads
        self.mid = torch.empty(batch, heads, NUM_KV_SPLITS, KV_LORA, dtype=torch.float32, device=device)
        self.lse = torch.empty(batch, heads, NUM_KV_SPLITS, dtype=torch.float32, device=device)
        self.out = torch.empty(batch, heads, KV_LORA, dtype=dtype, device=device)

    def __call__(self, q, cache, block_table, seq_lens, scale: float) -> torch.Tensor:
        """q: (batch, heads, 576); cache: (pages, page_size, 576); block_table: (batch, pages)."""
        batch, heads = q.shape[0], q.shape[1]
        page = cache.shape[1]
        mid = self.mid
        grid = (batch, triton.cdiv(heads, BLOCK_H), NUM_KV_SPLITS)
        mla_split_kernel[grid](
            q, cache, block_table, seq_lens, mid, self.lse, scale,
            heads, q.stride(0), q.stride(1), cache.stride(1), block_table.stride(0),
            mid.stride(0), mid.stride(1), mid.stride(2),
            PAGE=page, SPLITS=NUM_KV_SPLITS, L=KV_LORA, R=ROPE, BH=BLOCK_H, BN=BLOCK_N,
            num_warps=4, num_stages=2,
        )  # fmt: skip
        mla_reduce_kernel[(batch, heads)](
            mid, self.lse, seq_lens, self.out, heads,
            mid.stride(0), mid.stride(1), mid.stride(2), self.out.stride(0), self.out.stride(1),
            SPLITS=NUM_KV_SPLITS, L=KV_LORA,
        )  # fmt: skip
        return self.out


def reference(q, cache, block_table, seq_lens, scale: float) -> torch.Tensor:
    """The same attention in PyTorch, fp32, one sequence at a time."""
    page = cache.shape[1]
    out = []
    for b in range(q.shape[0]):
        n = int(seq_lens[b])
        pages = block_table[b, : -(-n // page)].long()
        rows = cache[pages].reshape(-1, cache.shape[-1])[:n].float()
        p = torch.softmax(q[b].float() @ rows.T * scale, dim=-1)
        out.append(p @ rows[:, :KV_LORA])
    return torch.stack(out)
