"""When each request's tokens reach the client: first token, last token, inter-token gaps.

The engine loop says when a step's tokens are delivered; this keeps the latencies, so the
scheduler holds none. Inter-token gaps are stored as (gap, count) pairs: one pair covers every
request of a step whose previous token came with the previous delivery, and one pair per
exception (a request joining, or coming back after a preemption).

With speculative decoding a step delivers 1 + accepted tokens of a request at once, in one
streamed chunk: the first has the gap since the request's last delivery, the others a gap of
zero (the client sees them together). So the per-token ITL pools zeros, and TPOT, (last -
first) / (tokens - 1), shows the speed-up; the gaps above zero are the ITL per chunk, what
`vllm bench serve` reports as ITL (one per streamed delta,
`vllm/benchmarks/lib/endpoint_request_func.py`).
"""

from __future__ import annotations

from array import array

from sim.core.scheduler import SchedulerOutput


class TokenTimes:
    """One replica's token deliveries (deliveries of a replica come in time order)."""

    __slots__ = ("itl_s", "itl_count", "_last_delivery_s")

    def __init__(self) -> None:
        self.itl_s = array("d")
        self.itl_count = array("q")
        self._last_delivery_s = -1.0

    def deliver(self, output: SchedulerOutput, delivery_s: float) -> int:
        """The tokens `output` sampled reach the client at `delivery_s`; returns their number."""
        itl_s, itl_count = self.itl_s, self.itl_count
        previous_s = self._last_delivery_s
        num_regular = 0
        for request in output.decodes:
            if request.last_token_s == previous_s:
                num_regular += 1
            else:
                itl_s.append(delivery_s - request.last_token_s)
                itl_count.append(1)
            request.last_token_s = delivery_s
        if num_regular:
            itl_s.append(delivery_s - previous_s)
            itl_count.append(num_regular)
        for request in output.sampling:
            if request.first_token_s < 0.0:
                request.first_token_s = delivery_s
            else:  # the first token after a recomputation
                itl_s.append(delivery_s - request.last_token_s)
                itl_count.append(1)
            request.last_token_s = delivery_s
        num_tokens = len(output.decodes) + len(output.sampling)
        if output.spec_decodes:
            num_tokens += self._deliver_chunks(output, delivery_s, previous_s)
        self._last_delivery_s = delivery_s
        return num_tokens

    def _deliver_chunks(self, output: SchedulerOutput, delivery_s: float, previous_s: float) -> int:
        """Speculative decodes: each request's tokens of the step arrive as one chunk."""
        itl_s, itl_count = self.itl_s, self.itl_count
        num_regular = num_together = num_tokens = 0
        for request, n in zip(output.spec_decodes, output.spec_num_emitted):
            if not n:
                continue
            num_tokens += n
            if request.first_token_s < 0.0:  # cannot happen in order, kept for safety
                request.first_token_s = delivery_s
                n -= 1
            elif request.last_token_s == previous_s:
                num_regular += 1
                n -= 1
            else:
                itl_s.append(delivery_s - request.last_token_s)
                itl_count.append(1)
                n -= 1
            num_together += n
            request.last_token_s = delivery_s
        if num_regular:
            itl_s.append(delivery_s - previous_s)
            itl_count.append(num_regular)
        if num_together:
            itl_s.append(0.0)
            itl_count.append(num_together)
        return num_tokens
