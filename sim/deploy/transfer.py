"""KV transfers between replicas: how many bytes, and when they land (the SimPy edge).

Bytes: a prompt's KV moves as whole blocks, in the receiving instance's layout. Each decode
GPU pulls the KV heads it will hold (NIXL reads the prefill instance's blocks head by head
when the TP sizes differ: vllm/distributed/kv_transfer/kv_connector/v1/nixl_connector.py,
heterogeneous TP), so the bytes on the links are

    blocks x block_size x decode_tp x kv_bytes_per_token(model, precision, decode_tp)

which counts a head once per decode GPU that holds it (replicated heads when decode TP exceeds
the KV heads are pulled once per GPU). The prefill layout's bytes (what the prefill instance
holds) are reported beside them.

Timing: the link's latency, then the bytes at the rate the shared links give the transfer
(sim.deploy.links), one SimPy event per change of sharing.
"""

from __future__ import annotations

import itertools
from typing import Callable

import simpy

from sim.deploy.links import LinkNetwork
from sim.deploy.topology import Placement, port_capacities, route
from sim.memory import kv_bytes_per_token
from sim.model_spec import ModelSpec
from sim.precision import PrecisionSpec


def kv_transfer_bytes(
    model: ModelSpec, precision: PrecisionSpec, tp: int, num_blocks: int, block_size: int
) -> int:
    """The KV of `num_blocks` blocks in the layout of a TP-`tp` instance, over all its GPUs."""
    return num_blocks * block_size * tp * kv_bytes_per_token(model, precision, tp)


class KVTransferService:
    def __init__(self, env: simpy.Environment, placements: list[Placement] | tuple[Placement, ...]) -> None:
        self.env = env
        self.placements = {p.replica_id: p for p in placements}
        self.network = LinkNetwork(port_capacities(list(placements)))
        self._on_done: dict[int, Callable[[float], None]] = {}
        self._ids = itertools.count()
        self._generation = 0
        self.num_transfers = 0
        self.bytes_total = 0.0
        self.bytes_by_kind = {"nvlink": 0.0, "rdma": 0.0}

    def submit(self, src: int, dst: int, size_bytes: float, on_done: Callable[[float], None]) -> str:
        """Start moving `size_bytes` from replica `src` to `dst`; `on_done(t)` when they land.
        Returns the link kind used."""
        r = route(self.placements[src], self.placements[dst])
        self.num_transfers += 1
        self.bytes_total += size_bytes
        self.bytes_by_kind[r.kind] += size_bytes
        flow_id = next(self._ids)
        self._on_done[flow_id] = on_done
        if size_bytes <= 0.0:
            self.env.timeout(r.latency_s).callbacks.append(lambda _: on_done(self.env.now))
            del self._on_done[flow_id]
            return r.kind

        def start(_: object) -> None:
            self.network.start(flow_id, r.ports, size_bytes, self.env.now)
            self._reschedule()

        if r.latency_s > 0.0:
            self.env.timeout(r.latency_s).callbacks.append(start)
        else:
            start(None)
        return r.kind

    def _reschedule(self) -> None:
        """One pending event for the next completion; an older one, made stale by a change of
        sharing, does nothing when it fires."""
        self._generation += 1
        t = self.network.next_completion_s()
        if t is None:
            return
        generation = self._generation
        self.env.timeout(max(t - self.env.now, 0.0)).callbacks.append(
            lambda _: self._fire(generation)
        )

    def _fire(self, generation: int) -> None:
        if generation != self._generation:
            return
        now = self.env.now
        for flow_id in self.network.advance(now):
            self._on_done.pop(flow_id)(now)
        self._reschedule()

    @property
    def in_flight(self) -> int:
        return len(self._on_done)
