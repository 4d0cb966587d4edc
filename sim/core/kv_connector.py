"""The scheduler's side of a KV connector: KV that arrives from outside this engine.

Behaviour matched: vLLM `vllm/distributed/kv_transfer/kv_connector/v1/base.py`
(`KVConnectorBase_V1`, scheduler-side methods) and its use in `vllm/v1/core/sched/scheduler.py`
(as read on main at commit 00024d31). A connector is how a decode instance receives a prompt's
KV from a prefill instance (P/D disaggregation) and how an engine loads prefix blocks back from
a host-memory or disk tier (KV offloading). The scheduler asks it, for a waiting request with
nothing computed yet, how many tokens beyond its local prefix hit it can supply; an
asynchronous load gets its blocks allocated at once and waits in the queue, in
`RequestStatus.WAITING_FOR_REMOTE_KVS`, holding no `max_num_seqs` slot and no token budget,
until the worker side reports the load finished. A finished request may keep its blocks while
the connector sends them elsewhere (`request_finished` returning True) until the worker side
reports the send finished.

The worker side is the connector's own business: the engine loop (sim.simulation) asks it
`get_finished()` once per applied step, as vLLM's model runner reports `finished_sending` and
`finished_recving` in each step's output, and a connector whose transfer lands while the engine
is idle wakes the engine (`Replica.wake`).

DIVERGENCE: vLLM passes block ids, a `KVConnectorMetadata` object and request ids as strings;
here the connector gets the `Request` (its `block_ids` are the allocation) and integer ids.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sim.core.request import Request
    from sim.core.scheduler import SchedulerOutput


class KVConnector(Protocol):
    def get_num_new_matched_tokens(
        self, request: Request, num_computed_tokens: int
    ) -> tuple[int, bool]:
        """Tokens after the first `num_computed_tokens` (the local prefix hit) that this
        connector can supply, and whether they load asynchronously. Called only for a request
        with nothing computed yet, which includes one whose whole prompt was loaded when it is
        a single token (the last token is recomputed): a connector supplies a request's tokens
        once, as vLLM's do (NixlConnector clears `do_remote_prefill` after the first call)."""
        ...

    def update_state_after_alloc(self, request: Request, num_external_tokens: int) -> None:
        """The request's blocks are allocated (`request.block_ids`): start loading the
        `num_external_tokens` the connector promised, if any."""
        ...

    def build_connector_meta(self, output: SchedulerOutput) -> None:
        """Once per scheduled step, after scheduling: where a connector picks what to store."""
        ...

    def request_finished(self, request: Request) -> bool:
        """The request finished. True: the scheduler keeps its blocks until the request's id
        comes back in `finished_sending` (the connector is sending them)."""
        ...

    def get_finished(self) -> tuple[set[int], set[int]]:
        """(finished_sending, finished_recving): request ids whose send or load completed since
        the last call."""
        ...
