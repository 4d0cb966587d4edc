"""Transfers that share links share their bandwidth (max-min fairness), in plain Python.

A port is one direction of one replica's links of one kind: its GPUs' NVLink out or in, or its
NICs out or in. A KV transfer from replica P to replica D inside a node holds P's NVLink-out
and D's NVLink-in ports; across nodes P's NIC-out and D's NIC-in. Each port's capacity is
split among the transfers on it by max-min fairness (progressive filling, as RDMA's
congestion control and NVLink's arbitration approach under steady load): every transfer gets
the largest rate such that no port is oversubscribed and no transfer could go faster without
slowing one that is no faster. Rates change only when a transfer starts or ends, so the
network is exact with one event per change (`next_completion_s`).

DIVERGENCE: bandwidth is shared fluidly and the link's latency is paid once before the bytes
flow; real RDMA moves packets, and NIXL splits a transfer into per-block descriptors whose
overheads are folded into the datasheet bandwidth here.
"""

from __future__ import annotations

from dataclasses import dataclass

Port = tuple[int, str]  # (replica id, "nvlink_tx" | "nvlink_rx" | "nic_tx" | "nic_rx")
_DONE = 1e-9  # remaining bytes below this fraction of the transfer's size: finished


@dataclass(slots=True)
class Flow:
    flow_id: int
    ports: tuple[Port, ...]
    size_bytes: float
    remaining_bytes: float
    rate: float = 0.0  # bytes/s under the current sharing


class LinkNetwork:
    def __init__(self, capacities: dict[Port, float]) -> None:
        self.capacities = capacities  # bytes/s per port
        self.flows: dict[int, Flow] = {}
        self._now_s = 0.0
        self.busy_s: dict[Port, float] = {port: 0.0 for port in capacities}  # some flow on it

    def start(self, flow_id: int, ports: tuple[Port, ...], size_bytes: float, now_s: float) -> None:
        self.advance(now_s)
        self.flows[flow_id] = Flow(flow_id, ports, size_bytes, size_bytes)
        self._share()

    def advance(self, now_s: float) -> list[int]:
        """Move every flow on to `now_s` at its current rate; return (and drop) those done."""
        dt = now_s - self._now_s
        if dt > 0.0:
            used: set[Port] = set()
            for flow in self.flows.values():
                flow.remaining_bytes -= flow.rate * dt
                used.update(flow.ports)
            for port in used:
                self.busy_s[port] += dt
            self._now_s = now_s
        done = [f.flow_id for f in self.flows.values() if f.remaining_bytes <= _DONE * f.size_bytes]
        for flow_id in done:
            del self.flows[flow_id]
        if done:
            self._share()
        return done

    def next_completion_s(self) -> float | None:
        """When the first flow will end if nothing else changes; None when idle."""
        if not self.flows:
            return None
        return self._now_s + min(max(f.remaining_bytes, 0.0) / f.rate for f in self.flows.values())

    def _share(self) -> None:
        """Progressive filling: raise every unfixed flow's rate together until a port fills;
        the flows on it are fixed at that rate; repeat with what the other ports have left."""
        left = dict(self.capacities)
        unfixed = dict(self.flows)
        while unfixed:
            count: dict[Port, int] = {}
            for flow in unfixed.values():
                for port in flow.ports:
                    count[port] = count.get(port, 0) + 1
            bottleneck = min(count, key=lambda p: (left[p] / count[p], p))
            share = left[bottleneck] / count[bottleneck]
            for flow_id in [i for i, f in unfixed.items() if bottleneck in f.ports]:
                flow = unfixed.pop(flow_id)
                flow.rate = share
                for port in flow.ports:
                    left[port] -= share
