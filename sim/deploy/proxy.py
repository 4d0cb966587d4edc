"""The P/D proxy: the client's single entry point to a disaggregated deployment.

Matched: vLLM 0.24.0 `tests/v1/kv_connector/nixl_integration/toy_proxy_server.py`: each
request goes first to a prefill instance with `max_tokens=1` and `do_remote_decode`; when
that answer comes back, the proxy picks a decode instance and streams the request's tokens
from it, with the prefill's `kv_transfer_params`. The toy proxy picks both round robin; here
each pool has its own router (`deployment.prefill_router`, `deployment.decode_router`).

The proxy quacks like a replica for the traffic side (sim.clients, sim.simulation.dispatch):
`add_request`, `num_outstanding` (client requests in flight) and `on_finish`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from sim.core.request import Request, RequestStatus
from sim.deploy.pd_connector import PDTransfers, RemotePrefill


class DisaggregatedProxy:
    replica_id = -1  # not an engine; each leg's replica records the request

    def __init__(
        self,
        prefill: Sequence[Any],
        decode: Sequence[Any],
        prefill_router: Any,
        decode_router: Any,
        transfers: PDTransfers,
        now: Callable[[], float],
    ) -> None:
        self.prefill = list(prefill)
        self.decode = list(decode)
        self.prefill_router = prefill_router
        self.decode_router = decode_router
        self.transfers = transfers
        self._now = now
        self.num_outstanding = 0
        self.on_finish: Callable[[Request], None] | None = None
        self.in_flight: dict[int, Request] = {}  # client requests not yet answered, by id
        for replica in self.prefill:
            replica.on_finish = self._prefill_done
        for replica in self.decode:
            replica.on_finish = self._decode_done
            replica.on_enqueue = self._decode_enqueued

    def add_request(self, request: Request) -> None:
        self.num_outstanding += 1
        self.in_flight[request.request_id] = request
        leg = Request(
            request_id=request.request_id,
            arrival_s=request.arrival_s,
            num_prompt_tokens=request.num_prompt_tokens,
            max_tokens=1,
            block_hashes=request.block_hashes,
            session_id=request.session_id,
            turn=request.turn,
        )
        self.prefill[self.prefill_router.route(self.prefill, request)].add_request(leg)

    def _prefill_done(self, leg: Request) -> None:
        """The prefill's answer reached the proxy (or the prefill instance refused it)."""
        request = self.in_flight[leg.request_id]
        if leg.status == RequestStatus.REJECTED:  # recorded (as the client's) by the prefill replica
            request.status = RequestStatus.REJECTED
            request.reject_reason = leg.reject_reason
            self._answer(request)
            return
        request.num_cached_tokens = leg.num_cached_tokens  # the prefix hit that saved compute
        request.num_preemptions += leg.num_preemptions  # the request's, over both legs
        self.transfers.remote[request.request_id] = RemotePrefill(leg.replica_id, leg)
        replica = self.decode[self.decode_router.route(self.decode, request)]
        replica.add_request(request, count_arrival=False)

    def _decode_enqueued(self, request: Request) -> None:
        remote = self.transfers.remote.get(request.request_id)
        if remote is not None:
            remote.enqueued_s = self._now()

    def _decode_done(self, request: Request) -> None:
        if request.status == RequestStatus.REJECTED:  # recorded by the decode replica
            self.transfers.abandon(request.request_id)
        else:
            self.transfers.finished(request)
        self._answer(request)

    def _answer(self, request: Request) -> None:
        self.num_outstanding -= 1
        del self.in_flight[request.request_id]
        if self.on_finish is not None:
            self.on_finish(request)
