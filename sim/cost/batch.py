"""The batch summary a cost model prices: aggregate sums, never per-request lists."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """What one engine step computes, summed over the scheduled requests.

    A prefill chunk is `q` new prompt tokens of a request that already has `p` tokens in its
    KV cache (p > 0 for the later chunks of a chunked prefill, or after a prefix-cache hit).
    Under a causal mask the chunk's query i (0-based) attends to p + i + 1 keys, so the chunk
    contributes q*p + q*(q+1)/2 query-key pairs:

        keys:     0 .......... p-1 | p ........ p+q-1
        query 0:  x x x x x x x x x  x
        query 1:  x x x x x x x x x  x x
        ...                          (triangle of q*(q+1)/2 pairs)

    A decode is one new token of a request with `c` tokens in its KV cache (it attends to c + 1
    keys, its own included; we count `c` context tokens read from the cache).
    """

    num_prefill_tokens: int = 0  # new prompt tokens computed this step (sum of chunk sizes q)
    num_prefill_seqs: int = 0  # requests with a prefill chunk this step
    prefill_attn_pairs: float = 0.0  # sum over chunks of q*p + q*(q+1)/2
    prefill_kv_tokens: int = 0  # sum over chunks of p + q: KV tokens the chunk's attention reads
    num_decode_seqs: int = 0  # requests generating one token this step
    decode_context_tokens: int = 0  # sum over decodes of their cached context length c

    @property
    def num_tokens(self) -> int:
        """Rows of every linear layer this step (vLLM's num_scheduled_tokens)."""
        return self.num_prefill_tokens + self.num_decode_seqs

    @property
    def num_seqs(self) -> int:
        """Sequences whose last position goes through the LM head (vLLM computes logits for
        every scheduled request, discarding those of unfinished prefill chunks)."""
        return self.num_prefill_seqs + self.num_decode_seqs

    @property
    def is_empty(self) -> bool:
        return self.num_tokens == 0
