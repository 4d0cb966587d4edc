"""How one engine's GPUs are laid out: tensor, pipeline, data-parallel attention, expert parallel.

Matched: vLLM 0.24.0 `vllm/config/parallel.py` (world size = tp x pp per DP rank; with
`--enable-expert-parallel` the MoE layers use an expert-parallel group of size dp x tp
instead of sharding every expert over TP), `vllm/distributed/utils.py` `get_pp_indices`
(layers per stage), `vllm/config/vllm.py` `max_concurrent_batches` (the engine core's batch
queue) and `vllm/v1/core/sched/async_scheduler.py` (a request decodes at most once every pp
steps under PP).

Plain Python; refusals are one-line ConfigErrors naming the field and what would work.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.errors import ConfigError
from sim.hardware_spec import HardwareSpec
from sim.model_spec import ModelSpec

# Busiest expert-parallel rank's tokens over the mean at decode batch sizes. DeepSeek-V3's
# auxiliary-loss-free balancing keeps the per-expert load within a few tens of percent of the
# mean (DeepSeek-V3 technical report, arXiv:2412.19437, Fig. 9), and DeepSeek's EPLB exists
# because the busiest GPU of an EP group still carries ~1.2-1.5x the mean without replicas
# (github.com/deepseek-ai/EPLB; "MoE-Lens"/"Lynx" measurements of 1.3x at EP8). 1.3: assumed.
DEFAULT_EP_LOAD_IMBALANCE = 1.3


def pp_layer_counts(num_layers: int, pp: int) -> tuple[int, ...]:
    """Layers of each stage, as vLLM's `get_pp_indices` splits them: evenly, the remainder
    one each to the stages before the last (the last also holds the final norm and LM head)."""
    counts = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        counts[-i] += 1
    return tuple(counts)


@dataclass(frozen=True, slots=True)
class ParallelSpec:
    """One engine's layout. Defaults are a single GPU."""

    tp: int = 1
    pp: int = 1
    dp: int = 1  # data-parallel attention ranks of one engine
    ep: int = 1  # expert-parallel size: 1 (experts sharded over TP) or dp x tp
    ep_load_imbalance: float = DEFAULT_EP_LOAD_IMBALANCE
    gpus_per_node: int = 8

    @property
    def num_gpus(self) -> int:
        return self.tp * self.pp * self.dp

    @property
    def expert_parallel(self) -> bool:
        return self.ep > 1

    @property
    def tp_spans_nodes(self) -> bool:
        return self.tp > self.gpus_per_node

    @property
    def num_nodes(self) -> int:
        return -(-self.num_gpus // self.gpus_per_node)

    def stage_crosses_nodes(self, stage: int) -> bool:
        """Whether stage `stage` sends its activations to the next over the NICs: stages of
        tp GPUs fill nodes in order, so a boundary between nodes is a NIC hop."""
        if self.tp >= self.gpus_per_node:
            return True
        first_gpu_next = (stage + 1) * self.tp
        return first_gpu_next % self.gpus_per_node == 0

    def max_concurrent_batches(self, async_scheduling: bool, v2_model_runner: bool = True) -> int:
        """vLLM's batch queue (`VllmConfig.max_concurrent_batches`): pp + 1 with async
        scheduling on model runner v2 (dense models), 2 with async at pp = 1, else pp."""
        if async_scheduling:
            if v2_model_runner:
                return self.pp + 1
            if self.pp <= 1:
                return 2
        return self.pp

    def describe(self) -> str:
        parts = [f"TP{self.tp}"]
        if self.pp > 1:
            parts.insert(0, f"PP{self.pp}")
        if self.dp > 1:
            parts.append(f"DP{self.dp}")
        if self.ep > 1:
            parts.append(f"EP{self.ep}")
        return " x ".join(parts)


def build_parallel_spec(
    model: ModelSpec, hardware: HardwareSpec, tp: int, pp: int, dp: int, ep: int,
    ep_load_imbalance: float | None,
) -> ParallelSpec:  # fmt: skip
    """Validate the layout against the model and the hardware, as vLLM's config checks do."""
    for name, value in (("tp", tp), ("pp", pp), ("dp", dp), ("ep", ep)):
        if value < 1:
            raise ConfigError(f"parallel.{name} must be >= 1, got {value}")
    if pp > model.num_hidden_layers:
        raise ConfigError(
            f"parallel.pp={pp} exceeds {model.name}'s {model.num_hidden_layers} layers; every "
            f"stage needs at least one layer (pp <= {model.num_hidden_layers})"
        )
    node = hardware.max_gpus_per_node
    if tp > node:
        if hardware.nics_per_node <= 0 or hardware.nic_bandwidth <= 0:
            raise ConfigError(
                f"parallel.tp={tp} spans nodes of {node} GPUs, but hardware {hardware.name} gives "
                "no network between nodes; set hardware.nics_per_node and nic_bandwidth_gbps, or tp <= "
                f"{node}"
            )
        if tp % node:
            raise ConfigError(f"parallel.tp={tp} across nodes must be a multiple of the {node} GPUs of a node")
    if tp * pp * dp > node and (hardware.nics_per_node <= 0 or hardware.nic_bandwidth <= 0):
        raise ConfigError(
            f"tp x pp x dp = {tp * pp * dp} GPUs need more than one node of {node}, but hardware "
            f"{hardware.name} gives no network between nodes (hardware.nics_per_node, nic_bandwidth_gbps)"
        )
    if dp > 1 and not model.is_moe:
        raise ConfigError(
            f"parallel.dp={dp} is data-parallel attention inside one MoE engine; {model.name} is dense: "
            "use parallel.replicas for independent engines"
        )
    if dp > 1 and ep == 1:
        raise ConfigError(
            f"parallel.dp={dp} is vLLM's DP attention with expert parallelism: set parallel.ep={dp * tp} "
            "(dp x tp); for independent engines use parallel.replicas"
        )
    if ep > 1:
        if not model.is_moe:
            raise ConfigError(f"parallel.ep={ep}: {model.name} has no experts (ep applies to MoE models)")
        if ep != dp * tp:
            raise ConfigError(
                f"parallel.ep={ep} must equal dp x tp = {dp * tp} (vLLM's expert-parallel group is "
                "the DP x TP GPUs of a stage); set parallel.ep or parallel.dp accordingly"
            )
        if model.num_local_experts % ep:
            raise ConfigError(
                f"parallel.ep={ep} does not divide {model.name}'s {model.num_local_experts} experts; "
                f"valid: {', '.join(str(e) for e in range(2, model.num_local_experts + 1) if model.num_local_experts % e == 0 and e <= 64)}"
            )
    imbalance = DEFAULT_EP_LOAD_IMBALANCE if ep_load_imbalance is None else ep_load_imbalance
    if not imbalance >= 1.0:
        raise ConfigError(
            f"parallel.ep_load_imbalance={ep_load_imbalance} must be >= 1 (busiest rank's tokens over the mean)"
        )
    return ParallelSpec(
        tp=tp, pp=pp, dp=dp, ep=ep, ep_load_imbalance=imbalance if ep > 1 else 1.0, gpus_per_node=node
    )
