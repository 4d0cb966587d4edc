"""A grouped expert GEMM of vLLM's fused_moe design, written here in Triton (needs a GPU).

The algorithm of vLLM 0.24.0 `vllm/model_executor/layers/fused_moe/fused_moe.py`
(`fused_moe_kernel`, `moe_align_block_size`, `get_default_config`), not its code:

1. align: the (token, slot) pairs of `topk_ids` that go to this GPU's experts are sorted by
   expert and each expert's run is padded to a multiple of BLOCK_M with a sentinel id; every
   BLOCK_M run of the sorted ids gets the expert it belongs to (`block_expert`);
2. one launch over all experts: program (m block, n block) reads its block's expert, gathers
   the rows its sorted ids name (a sentinel row loads zeros and is not stored), multiplies by
   that expert's weight tile (weights stored (E, N, K), K contiguous, as vLLM's w13 / w2) and
   writes each row back at its (token, slot) position. The grid covers the worst-case padded
   length, as vLLM's does, so a CUDA graph fits every routing: programs past the real padded
   length return at once.

w13 (hidden -> 2 x width) reads one A row per token (`rows_per_token` = top_k, row id //
top_k); w2 (width -> hidden) reads the intermediate rows at their (token, slot) position and
scales them by the routing weight (vLLM's MUL_ROUTED_WEIGHT). FP8 runs vLLM's block-quantised
W8A8 path (DeepSeek-V3: 128 x 128 weight scales, 1 x 128 activation scales), BLOCK_K = 128.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

SCALE_GROUP = 128  # DeepSeek-V3's weight_block_size [128, 128]


@triton.jit
def grouped_gemm_kernel(
    a_ptr, b_ptr, c_ptr, a_scale_ptr, b_scale_ptr, weight_ptr,
    sorted_ids_ptr, block_expert_ptr, num_padded_ptr,
    N, K, num_rows, max_padded,
    stride_am, stride_be, stride_bn, stride_cm, stride_asm, stride_bse, stride_bsn,
    ROWS_PER_TOKEN: tl.constexpr, MUL_WEIGHT: tl.constexpr, FP8_BLOCK: tl.constexpr,
    GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    blocks_m = tl.cdiv(max_padded, BLOCK_M)
    blocks_n = tl.cdiv(N, BLOCK_N)
    # GROUP_M m blocks share each n block in turn, so the weight tile stays in L2
    per_group = GROUP_M * blocks_n
    first_m = (pid // per_group) * GROUP_M
    rows_in_group = tl.minimum(blocks_m - first_m, GROUP_M)
    block_m = first_m + (pid % per_group) % rows_in_group
    block_n = (pid % per_group) // rows_in_group
    if block_m * BLOCK_M >= tl.load(num_padded_ptr):
        return
    ids = tl.load(sorted_ids_ptr + block_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    live = ids < num_rows
    expert = tl.load(block_expert_ptr + block_m).to(tl.int64)
    a_rows = ids // ROWS_PER_TOKEN
    offs_n = block_n * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + a_rows[:, None] * stride_am + offs_k[None, :]
    b_ptrs = b_ptr + expert * stride_be + offs_n[None, :] * stride_bn + offs_k[:, None]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        a = tl.load(a_ptrs, mask=live[:, None], other=0.0)
        b = tl.load(b_ptrs)
        if FP8_BLOCK:
            a_s = tl.load(a_scale_ptr + a_rows * stride_asm + k, mask=live, other=0.0)
            b_s = tl.load(b_scale_ptr + expert * stride_bse + (offs_n // GROUP) * stride_bsn + k)
            acc += tl.dot(a, b) * a_s[:, None] * b_s[None, :]
        else:
            acc = tl.dot(a, b, acc=acc)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K
    if MUL_WEIGHT:
        acc = acc * tl.load(weight_ptr + ids, mask=live, other=0.0)[:, None]
    c_ptrs = c_ptr + ids[:, None] * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=live[:, None])


def align(topk_ids: torch.Tensor, local_experts: int, block_m: int) -> tuple[torch.Tensor, ...]:
    """(sorted ids padded to the worst case, expert of each block, padded length (1 element),
    rows that reached this GPU's experts, hit experts). Ids >= local_experts are other GPUs'
    experts and are left out; the sentinel is topk_ids.numel()."""
    flat = topk_ids.flatten()
    sentinel = flat.numel()
    idx = torch.nonzero(flat < local_experts).flatten()
    experts = flat[idx]
    order = torch.argsort(experts, stable=True)
    idx, experts = idx[order], experts[order]
    counts = torch.bincount(experts, minlength=local_experts)
    padded = (counts + block_m - 1) // block_m * block_m
    starts = torch.cumsum(padded, 0) - padded
    first = torch.cumsum(counts, 0) - counts
    max_padded = sentinel + local_experts * (block_m - 1)
    sorted_ids = torch.full((max_padded,), sentinel, dtype=torch.int32, device=flat.device)
    rank = torch.arange(idx.numel(), device=flat.device) - first[experts]
    sorted_ids[starts[experts] + rank] = idx.to(torch.int32)
    block_expert = torch.zeros(-(-max_padded // block_m), dtype=torch.int32, device=flat.device)
    used = torch.repeat_interleave(torch.arange(local_experts, device=flat.device), padded // block_m)
    block_expert[: used.numel()] = used.to(torch.int32)
    num_padded = padded.sum().reshape(1).to(torch.int32)
    return sorted_ids, block_expert, num_padded, int(idx.numel()), int((counts > 0).sum())


def grouped_gemm(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, routing: tuple[torch.Tensor, ...],
    rows_per_token: int, config: tuple[int, int, int, int, int, int],
    weights: torch.Tensor | None = None, a_scale: torch.Tensor | None = None,
    b_scale: torch.Tensor | None = None,
) -> None:  # fmt: skip
    """c[row] = a[row // rows_per_token] @ b[expert(row)].T (x weight[row]) for every routed
    row; `config` = (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages)."""
    sorted_ids, block_expert, num_padded = routing[:3]
    bm, bn, bk, gm, warps, stages = config
    n, k = b.shape[1], b.shape[2]
    assert n % bn == 0 and k % bk == 0, (n, k, config)
    fp8 = a_scale is not None
    assert not fp8 or bk == SCALE_GROUP, config
    max_padded = sorted_ids.numel()
    grid = (triton.cdiv(max_padded, bm) * (n // bn),)
    dummy = c
    grouped_gemm_kernel[grid](
        a, b, c, a_scale if fp8 else dummy, b_scale if fp8 else dummy,
        weights if weights is not None else dummy, sorted_ids, block_expert, num_padded,
        n, k, c.shape[0], max_padded,
        a.stride(0), b.stride(0), b.stride(1), c.stride(0),
        a_scale.stride(0) if fp8 else 0, b_scale.stride(0) if fp8 else 0, b_scale.stride(1) if fp8 else 0,
        ROWS_PER_TOKEN=rows_per_token, MUL_WEIGHT=weights is not None, FP8_BLOCK=fp8,
        GROUP=SCALE_GROUP, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=gm,
        num_warps=warps, num_stages=stages,
    )  # fmt: skip


def reference(a, b, topk_ids, local_experts, rows_per_token, weights=None, a_scale=None, b_scale=None):
    """The same product in PyTorch (fp32), one expert at a time; rows not routed here are 0."""
    flat = topk_ids.flatten()
    out = torch.zeros(flat.numel(), b.shape[1], dtype=torch.float32, device=a.device)
    af = a.float()
    bf = b.float()
    if a_scale is not None:
        af = af * a_scale.repeat_interleave(SCALE_GROUP, dim=1)[:, : a.shape[1]]
        bf = bf * b_scale.repeat_interleave(SCALE_GROUP, 1).repeat_interleave(SCALE_GROUP, 2)
    for e in range(local_experts):
        rows = torch.nonzero(flat == e).flatten()
        if rows.numel():
            out[rows] = af[rows // rows_per_token] @ bf[e].T
    if weights is not None:
        out *= weights.float()[:, None]
    return out
