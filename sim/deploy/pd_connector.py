"""The scheduler side of prefill/decode disaggregation, as vLLM's NIXL connector does it.

Matched: vLLM 0.24.0 `vllm/distributed/kv_transfer/kv_connector/v1/nixl_connector.py`
(`NixlConnectorScheduler`) behind `tests/v1/kv_connector/nixl_integration/toy_proxy_server.py`:

- the proxy sends the request to a prefill instance with `max_tokens=1` and
  `do_remote_decode`; the prefill instance computes the prompt, samples one token, and on
  finishing (`request_finished`) keeps the request's blocks (`delay_free_blocks`) until the
  decode side has read them (`finished_sending`);
- the proxy then sends the request, with the prefill's `kv_transfer_params`, to a decode
  instance. Its scheduler asks `get_num_new_matched_tokens`: the prompt tokens beyond its own
  prefix hit, loaded asynchronously. It allocates the blocks, the request waits in
  WAITING_FOR_REMOTE_KVS (`update_state_after_alloc` records it, `build_connector_meta`
  hands the reads to the worker), and once the read lands (`finished_recving`) the request is
  schedulable; the scheduler recomputes the last prompt token to sample the first output;
- the client's first token is the decode instance's: the proxy discards the prefill's
  response, so TTFT includes the transfer (the prefill instance's own TTFT is kept apart).

The transfer itself is timed by `sim.deploy.transfer.KVTransferService`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from sim.core.request import Request
from sim.deploy.transfer import KVTransferService, kv_transfer_bytes
from sim.model_spec import ModelSpec
from sim.precision import PrecisionSpec


@dataclass(slots=True)
class RemotePrefill:
    """vLLM's kv_transfer_params of a decode request: where its prompt's KV is."""

    prefill_replica: int
    prefill_request: Request
    enqueued_s: float = -1.0  # reached the decode engine
    transfer_start_s: float = -1.0  # blocks allocated at decode, read issued
    landed_s: float = -1.0
    bytes: float = 0.0
    link: str = ""
    local_hit_tokens: int = 0  # the decode instance's own prefix hit: not transferred


@dataclass(slots=True)
class TransferLog:
    """Per finished request: the P/D timings the pool metrics need (seconds)."""

    prefill_queue_s: list[float] = field(default_factory=list)
    prefill_ttft_s: list[float] = field(default_factory=list)
    decode_wait_blocks_s: list[float] = field(default_factory=list)  # enqueued -> allocated
    transfer_s: list[float] = field(default_factory=list)  # read issued -> landed
    decode_queue_s: list[float] = field(default_factory=list)  # landed -> first scheduled
    ttft_s: list[float] = field(default_factory=list)
    bytes: list[float] = field(default_factory=list)


class PDTransfers:
    """What the two sides share: the remote prefills in flight and the transfer service."""

    def __init__(
        self,
        service: KVTransferService,
        model: ModelSpec,
        block_size: int,
        decode_layout: dict[int, tuple[PrecisionSpec, int]],
    ) -> None:
        self.service = service
        self.model = model
        self.block_size = block_size
        self.decode_layout = decode_layout  # decode replica id -> (precision, tp)
        self.remote: dict[int, RemotePrefill] = {}
        self.producers: dict[int, ProducerConnector] = {}
        self.log = TransferLog()

    def sent(self, remote: RemotePrefill) -> None:
        """The prefill side may free the blocks (vLLM: the decode side's notification)."""
        self.producers[remote.prefill_replica].finish_sending(remote.prefill_request.request_id)

    def start(self, request: Request, dst: int, num_external_tokens: int, now_s: float, on_landed: Callable[[], None]) -> None:
        remote = self.remote[request.request_id]
        precision, tp = self.decode_layout[dst]
        # Whole blocks move: those of the tokens beyond the decode side's own prefix hit.
        first_block = remote.local_hit_tokens // self.block_size
        last_block = -(-(remote.local_hit_tokens + num_external_tokens) // self.block_size)
        remote.bytes = kv_transfer_bytes(self.model, precision, tp, last_block - first_block, self.block_size)
        remote.transfer_start_s = now_s

        def landed(t: float) -> None:
            remote.landed_s = t
            self.sent(remote)
            on_landed()

        remote.link = self.service.submit(remote.prefill_replica, dst, remote.bytes, landed)

    def finished(self, request: Request) -> None:
        """A decode request finished: its P/D timings go to the log."""
        remote = self.remote.pop(request.request_id, None)
        if remote is None:
            return
        p = remote.prefill_request
        log = self.log
        log.prefill_queue_s.append(p.first_scheduled_s - p.arrival_s)
        log.prefill_ttft_s.append(p.first_token_s - p.arrival_s)
        log.decode_wait_blocks_s.append(remote.transfer_start_s - remote.enqueued_s)
        log.transfer_s.append(remote.landed_s - remote.transfer_start_s)
        log.decode_queue_s.append(request.first_scheduled_s - remote.landed_s)
        log.ttft_s.append(request.first_token_s - request.arrival_s)
        log.bytes.append(remote.bytes)

    def abandon(self, request_id: int) -> None:
        """The decode side refused the request: the prefill side frees its blocks at once.
        DIVERGENCE: vLLM's prefill instance frees them only after
        VLLM_NIXL_ABORT_REQUEST_TIMEOUT (480 s) when no decode instance reads them."""
        remote = self.remote.pop(request_id, None)
        if remote is not None and remote.transfer_start_s < 0.0:
            self.sent(remote)


class ProducerConnector:
    """Prefill instance (kv_role kv_producer): every request is `do_remote_decode`."""

    def __init__(self, transfers: PDTransfers, replica_id: int, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._finished_sending: set[int] = set()
        transfers.producers[replica_id] = self

    def get_num_new_matched_tokens(self, request: Request, num_computed_tokens: int) -> tuple[int, bool]:
        return 0, False

    def update_state_after_alloc(self, request: Request, num_external_tokens: int) -> None:
        pass

    def build_connector_meta(self, output: Any) -> None:
        pass

    def request_finished(self, request: Request) -> bool:
        return True  # delay_free_blocks: the decode instance has yet to read them

    def finish_sending(self, request_id: int) -> None:
        self._finished_sending.add(request_id)
        self._wake()

    def get_finished(self) -> tuple[set[int], set[int]]:
        sending, self._finished_sending = self._finished_sending, set()
        return sending, set()


class ConsumerConnector:
    """Decode instance (kv_role kv_consumer): loads the prompt's KV its proxy said where to find."""

    def __init__(self, transfers: PDTransfers, replica_id: int, now: Callable[[], float], wake: Callable[[], None]) -> None:
        self._transfers = transfers
        self._replica_id = replica_id
        self._now = now
        self._wake = wake
        self._to_load: list[tuple[Request, int]] = []  # allocated this step, reads not issued
        self._finished_recving: set[int] = set()

    def get_num_new_matched_tokens(self, request: Request, num_computed_tokens: int) -> tuple[int, bool]:
        remote = self._transfers.remote.get(request.request_id)
        if remote is None or remote.transfer_start_s >= 0.0:
            return 0, False
        count = request.num_prompt_tokens - num_computed_tokens
        remote.local_hit_tokens = num_computed_tokens
        return (count, True) if count > 0 else (0, False)

    def update_state_after_alloc(self, request: Request, num_external_tokens: int) -> None:
        if num_external_tokens > 0:
            self._to_load.append((request, num_external_tokens))

    def build_connector_meta(self, output: Any) -> None:
        """The worker issues the reads of the requests allocated in this step."""
        if not self._to_load:
            return
        now = self._now()
        for request, num_external in self._to_load:
            request_id = request.request_id

            def landed(request_id: int = request_id) -> None:
                self._finished_recving.add(request_id)
                self._wake()

            self._transfers.start(request, self._replica_id, num_external, now, landed)
        self._to_load = []

    def request_finished(self, request: Request) -> bool:
        return False

    def get_finished(self) -> tuple[set[int], set[int]]:
        recving, self._finished_recving = self._finished_recving, set()
        return set(), recving
