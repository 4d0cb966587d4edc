"""What a multi-GPU layout's figures rest on, for the summary's `assumptions`: one GPU can
measure the GEMMs and attention kernels, not the links between GPUs or nodes."""

from __future__ import annotations

from sim.hardware_spec import HardwareSpec
from sim.model_spec import ModelSpec
from sim.parallel import DEFAULT_EP_LOAD_IMBALANCE, ParallelSpec

ASSUMED = "assumed, not measured"


def parallel_assumptions(model: ModelSpec, hardware: HardwareSpec, parallel: ParallelSpec) -> dict[str, object]:
    """One entry per communication path the layout uses, saying measured or assumed."""
    out: dict[str, object] = {"parallel_layout": parallel.describe()}
    comm: dict[str, str] = {}
    nic = (
        f"{hardware.nics_per_node} NICs x {hardware.nic_bandwidth / 1e9:g} GB/s per node,"
        f" {hardware.nic_latency_s * 1e6:g} us per hop (hardware config)"
    )
    if parallel.tp_spans_nodes:
        comm["tp_allreduce_across_nodes"] = (
            f"{ASSUMED}: the node's all-reduce plus a ring over {parallel.tp // parallel.gpus_per_node}"
            f" nodes on {nic}"
        )
    if parallel.ep > 1:
        spans = parallel.ep > parallel.gpus_per_node
        comm["ep_dispatch_combine"] = (
            f"{ASSUMED}: all-gather + reduce-scatter (vLLM's allgather_reducescatter) priced as halves of"
            f" the all-reduce over EP{parallel.ep}" + (f", across nodes on {nic}" if spans else " inside the node")
        )
        imbalance = parallel.ep_load_imbalance
        source = "default, from the literature" if imbalance == DEFAULT_EP_LOAD_IMBALANCE else "set"
        comm["ep_load_imbalance"] = f"{ASSUMED}: busiest EP rank at {imbalance:g}x the mean rows ({source})"
    if parallel.pp > 1:
        crosses = any(parallel.stage_crosses_nodes(s) for s in range(parallel.pp - 1))
        comm["pp_send_recv"] = f"{ASSUMED}: latency + bytes / link, " + (
            f"over the NICs ({nic})" if crosses else "over NVLink (datasheet)"
        )
    if parallel.dp > 1:
        comm["dp_attention_balance"] = f"{ASSUMED}: every step split evenly over the {parallel.dp} DP ranks"
    if comm:
        out["multi_gpu_communication"] = comm
    return out
