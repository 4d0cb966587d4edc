"""Speculative decoding in the run summary: vLLM's acceptance metrics, the drafter's share of
GPU time, and the ITL per streamed chunk.

Definitions as vLLM 0.24.0 logs them (`vllm/v1/spec_decode/metrics.py`, SpecDecodingLogging):
- acceptance rate = accepted draft tokens / draft tokens;
- mean acceptance length = 1 + accepted draft tokens / drafts (tokens per verify step);
- per-position acceptance rate i = drafts whose draft i was accepted / drafts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from sim.core.spec_decode import SpecDecodingStats
from sim.metrics.summary import distribution

if TYPE_CHECKING:
    from sim.config.speculative import SpeculativeSpec
    from sim.cost.drafter import SpeculativeCostModel
    from sim.metrics.recorder import Recorder


def speculative_summary(
    speculative: SpeculativeSpec | None,
    replicas: Sequence[Any],
    cost_models: Sequence[SpeculativeCostModel],
    recorder: Recorder,
    itl_s: np.ndarray,
    itl_counts: np.ndarray,
) -> dict[str, Any]:
    """{"speculative": {...}} for a run with speculative decoding, {} without."""
    if speculative is None:
        return {}
    k = speculative.decode.num_speculative_tokens
    stats = SpecDecodingStats(k)
    for replica in replicas:
        if replica.scheduler.spec_decoding_stats is not None:
            stats.merge(replica.scheduler.spec_decoding_stats)
    drafter_s = sum(m.drafter_gpu_s for m in cost_models)
    gpu_s = recorder.steps.gpu_time_s
    chunk = itl_s > 0.0
    return {
        "speculative": {
            **speculative.describe(),
            "num_drafts": stats.num_drafts,
            "num_draft_tokens": stats.num_draft_tokens,
            "num_accepted_tokens": stats.num_accepted_tokens,
            "acceptance_rate": _ratio(stats.num_accepted_tokens, stats.num_draft_tokens),
            "mean_acceptance_length": (
                1.0 + stats.num_accepted_tokens / stats.num_drafts if stats.num_drafts else None
            ),
            "per_position_acceptance_rate": [
                _ratio(n, stats.num_drafts) for n in stats.num_accepted_tokens_per_pos
            ],
            # Drafter passes, summed over the run (the drafter runs inside each step's GPU time).
            "drafter_gpu_s": drafter_s,
            "drafter_share_of_gpu_time": _ratio(drafter_s, gpu_s),
            # `vllm bench serve`'s ITL: one gap per streamed chunk (tokens that arrive together
            # are one chunk); latency_s.itl pools every token, zeros included.
            "itl_per_chunk_s": distribution(itl_s[chunk], itl_counts[chunk]),
        }
    }


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None
