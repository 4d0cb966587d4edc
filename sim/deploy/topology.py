"""Where each replica's GPUs sit, and which links a KV transfer between two replicas uses.

Replicas are packed onto nodes of `hardware.max_gpus_per_node` GPUs, pool by pool in the
order the deployment lists them, each replica on one node (first fit; a node holds one kind
of GPU). A transfer between two replicas of one node goes over NVLink (each GPU's
`interconnect_bandwidth_gbps`, one direction); between nodes over the RDMA NICs: a replica
of `tp` GPUs on a node with `nics_per_node` NICs of `nic_bandwidth_gbps` uses tp x nics_per_node /
max_gpus_per_node of them (at least one), as GPU-direct RDMA pairs each GPU with its nearest
NIC. A replica's port capacity is the sum over the links it uses.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.deploy.links import Port
from sim.hardware_spec import HardwareSpec


@dataclass(frozen=True, slots=True)
class Placement:
    replica_id: int
    pool: str
    node_id: int
    tp: int
    hardware: HardwareSpec

    @property
    def num_nics(self) -> float:
        hw = self.hardware
        return max(1.0, self.tp * hw.nics_per_node / hw.max_gpus_per_node) if hw.nics_per_node else 0.0


@dataclass(frozen=True, slots=True)
class Route:
    """The ports a transfer holds and the latency it pays before its bytes flow."""

    kind: str  # "nvlink" | "rdma"
    ports: tuple[Port, Port]
    latency_s: float


def place(replicas: list[tuple[int, str, int, HardwareSpec]]) -> list[Placement]:
    """`replicas`: (replica id, pool, tp, hardware) in deployment order."""
    free: list[tuple[str, int]] = []  # per node: hardware name, free GPUs
    placements = []
    for replica_id, pool, tp, hardware in replicas:
        node_id = next(
            (i for i, (name, left) in enumerate(free) if name == hardware.name and left >= tp), None
        )
        if node_id is None:
            free.append((hardware.name, hardware.max_gpus_per_node))
            node_id = len(free) - 1
        name, left = free[node_id]
        free[node_id] = (name, left - tp)
        placements.append(Placement(replica_id, pool, node_id, tp, hardware))
    return placements


def route(src: Placement, dst: Placement) -> Route:
    if src.node_id == dst.node_id:
        latency = max(src.hardware.interconnect_latency_s, dst.hardware.interconnect_latency_s)
        return Route("nvlink", ((src.replica_id, "nvlink_tx"), (dst.replica_id, "nvlink_rx")), latency)
    latency = max(src.hardware.nic_latency_s, dst.hardware.nic_latency_s)
    return Route("rdma", ((src.replica_id, "nic_tx"), (dst.replica_id, "nic_rx")), latency)


def port_capacities(placements: list[Placement]) -> dict[Port, float]:
    """Bytes/s of every port of every replica."""
    capacities: dict[Port, float] = {}
    for p in placements:
        nvlink = p.tp * p.hardware.interconnect_bandwidth
        nic = p.num_nics * p.hardware.nic_bandwidth
        for direction in ("tx", "rx"):
            capacities[(p.replica_id, f"nvlink_{direction}")] = nvlink
            capacities[(p.replica_id, f"nic_{direction}")] = nic
    return capacities


def missing_link(src: Placement, dst: Placement) -> str:
    """Why no transfer can go from `src` to `dst` ("" when one can), naming the key to set."""
    r = route(src, dst)
    ends = (src, dst)
    if r.kind == "nvlink":
        for p in ends:
            if p.hardware.interconnect_bandwidth <= 0:
                return (
                    f"hardware {p.hardware.name}: interconnect_bandwidth_gbps is 0, so no KV can move"
                    f" between replicas of one node (pools {src.pool} -> {dst.pool})"
                )
        return ""
    for p in ends:
        hw = p.hardware
        if hw.nics_per_node <= 0 or hw.nic_bandwidth <= 0:
            return (
                f"hardware {hw.name}: nics_per_node={hw.nics_per_node} nic_bandwidth_gbps="
                f"{hw.nic_bandwidth / 1e9:g}, but the KV transfer from pool {src.pool} to pool"
                f" {dst.pool} crosses nodes; set hardware.nics_per_node and hardware.nic_bandwidth_gbps"
            )
    return ""
