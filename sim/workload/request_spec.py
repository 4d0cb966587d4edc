"""What a workload hands the simulator: one record per request, in arrival order."""

from __future__ import annotations

from dataclasses import dataclass

# The most tokens one count (a prompt, an answer, a length bound) may hold: far beyond any
# model's context (a request above max_model_len is rejected anyway), and small enough that
# float64 holds it exactly and sums over millions of requests stay inside int64. A count of
# 2**63 would otherwise wrap negative when it becomes an int64.
MAX_TOKENS = 2**40
# The latest simulated time a request may arrive at (136 years): float64 seconds there still
# resolve a microsecond (their spacing is 2**-20 s). Much later, an engine step of a few
# milliseconds added to the clock would leave it unchanged: time would stop, and every latency
# would read 0.
MAX_ARRIVAL_S = 2.0**32


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """A request as the client sends it. Times in seconds from the start of the run.

    `prefix_hashes` optionally identifies the prompt's prefix in blocks of `prefix_block_tokens`
    tokens (for example the 512-token `hash_ids` of a Mooncake trace): two requests whose first
    n hashes agree share their first n * prefix_block_tokens prompt tokens.

    `block_hashes`, set only by sessions (which are built knowing the engine's KV block size),
    are the identities of the request's full KV blocks themselves, prompt first and then the
    answer it will generate, so that the next turn of the conversation can hit the answer's
    blocks too. When set they are used as they are and `prefix_hashes` is ignored.
    """

    request_id: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    prefix_hashes: tuple[int, ...] = ()
    prefix_block_tokens: int = 0
    source_line: int = 0  # line of the trace file it came from (0 for synthetic requests)
    block_hashes: tuple[int, ...] = ()
    session_id: int = -1  # conversation it belongs to (closed loop, sessions); -1: none
    turn: int = 0  # 0-based turn within the session
