"""Collectives between GPUs beyond one node's measured all-reduce: across nodes, the expert-
parallel dispatch and combine, and the activations a pipeline stage sends to the next.

Inside one node the all-reduce is the efficiency model's (the measured NCCL curve where a
profile has one, `sim.cost.calibrated`). Between nodes nothing here is measured: one GPU
cannot measure a NIC, so every figure below is assumed and the run says so.

All-reduce over n = k nodes x g GPUs (TP across nodes) is priced as NCCL's hierarchical
pattern: reduce-scatter and all-gather inside each node (together the node's all-reduce of
the message) and, between them, a ring all-reduce of each GPU's 1/g shard over the k nodes
on that GPU's share of the node's NICs (NCCL runs one ring per NIC rail):

    t(S) = t_node(S, g) + 2 (k - 1) a_nic + 2 (k - 1) / k x (S / g) / (nics x B_nic / g)

Expert-parallel dispatch and combine follow vLLM 0.24.0's default `all2all_backend`
("allgather_reducescatter", `vllm/config/parallel.py`; `vllm/distributed/device_communicators/
all2all.py` AgRsAll2AllManager): dispatch all-gathers every DP rank's tokens to every EP
rank, combine reduce-scatters the expert outputs back. A ring all-gather (or reduce-scatter)
of S bytes in all is half a ring all-reduce of S (nccl-tests PERFORMANCE.md), so each is
priced as half the all-reduce of the gathered tokens over the EP group, on the links it spans.

A pipeline stage sends its hidden states and residual (vLLM `IntermediateTensors`, bf16) to
the next: each TP rank sends its 1/tp slice point to point (`send_tensor_dict` with the TP
all-gather group), over NVLink inside a node and its NIC between nodes, and the receiving
stage all-gathers the slices (half an all-reduce of the whole).
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.cost.efficiency import EfficiencyModel
from sim.hardware_spec import HardwareSpec

ACT_BYTES = 2.0  # bf16 activations on the wire
PP_TENSORS = 2  # hidden_states and residual go to the next stage


@dataclass(frozen=True, slots=True)
class Links:
    """The links a collective can use, from the hardware config."""

    gpus_per_node: int
    nvlink_bandwidth: float  # per GPU, one direction, bytes/s
    nvlink_latency_s: float
    nic_bandwidth_per_gpu: float  # the node's NICs shared by its GPUs, bytes/s
    nic_latency_s: float

    @classmethod
    def of(cls, hardware: HardwareSpec) -> Links:
        g = hardware.max_gpus_per_node
        return cls(
            gpus_per_node=g,
            nvlink_bandwidth=hardware.interconnect_bandwidth,
            nvlink_latency_s=hardware.interconnect_latency_s,
            nic_bandwidth_per_gpu=hardware.nics_per_node * hardware.nic_bandwidth / g,
            nic_latency_s=hardware.nic_latency_s,
        )


def allreduce_s(efficiency: EfficiencyModel, links: Links, message_bytes: float, n: int) -> float:
    """All-reduce of `message_bytes` over n GPUs, hierarchical when n spans nodes."""
    if n <= 1 or message_bytes <= 0.0:
        return 0.0
    g = links.gpus_per_node
    if n <= g:
        return efficiency.allreduce_time_s(message_bytes, n)
    k = -(-n // g)
    shard = message_bytes / g
    inter = 2 * (k - 1) * links.nic_latency_s + 2 * (k - 1) / k * shard / links.nic_bandwidth_per_gpu
    return efficiency.allreduce_time_s(message_bytes, g) + inter


def dispatch_combine_s(
    efficiency: EfficiencyModel, links: Links, num_tokens: int, hidden: int, ep: int
) -> tuple[float, float]:
    """(dispatch, combine) of one MoE layer: all-gather then reduce-scatter of the tokens of
    the whole EP group (num_tokens x hidden, bf16), each half that all-reduce's time."""
    if ep <= 1 or num_tokens <= 0:
        return 0.0, 0.0
    half = 0.5 * allreduce_s(efficiency, links, num_tokens * hidden * ACT_BYTES, ep)
    return half, half


def stage_send_s(
    efficiency: EfficiencyModel, links: Links, num_tokens: int, hidden: int, tp: int, crosses_nodes: bool
) -> float:
    """One stage's activations to the next: 1/tp of them per GPU point to point, then the
    receiving TP group's all-gather."""
    if num_tokens <= 0:
        return 0.0
    message = PP_TENSORS * num_tokens * hidden * ACT_BYTES
    if crosses_nodes:
        hop = links.nic_latency_s + (message / tp) / links.nic_bandwidth_per_gpu
    else:
        hop = links.nvlink_latency_s + (message / tp) / links.nvlink_bandwidth
    gather = 0.5 * efficiency.allreduce_time_s(message, tp) if tp > 1 else 0.0
    return hop + gather
