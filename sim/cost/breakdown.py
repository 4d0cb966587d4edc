"""What one step cost: time, FLOPs and bytes per operator class, and what bound each."""

from __future__ import annotations

from dataclasses import dataclass

# Operator classes of one forward pass, in execution order within a layer, then the head.
# Column names of steps.parquet derive from these.
OP_CLASSES: tuple[str, ...] = (
    "qkv_proj",
    "attention_prefill",
    "attention_decode",
    "o_proj",
    "mlp",
    "lm_head",
    "elementwise",
    "allreduce",
)

BOUND_COMPUTE = "compute"
BOUND_MEMORY = "memory"
BOUND_LATENCY = "latency"  # communication or launch latency, neither roof
BOUND_IDLE = "idle"  # nothing ran


# OpCost and StepCost are built for every step (hot state, so not frozen: a frozen dataclass
# costs twice as much to build); cost models share them from their memos, so nothing may
# change one once built.
@dataclass(slots=True)
class OpCost:
    """One operator class over all layers of one step, on one GPU of the TP group."""

    time_s: float = 0.0
    flops: float = 0.0
    bytes: float = 0.0
    compute_s: float = 0.0  # time at the (efficiency-scaled) compute roof
    memory_s: float = 0.0  # time at the (efficiency-scaled) bandwidth roof

    @property
    def bound(self) -> str:
        if self.time_s <= 0.0:
            return BOUND_IDLE
        if self.compute_s <= 0.0 and self.memory_s <= 0.0:
            return BOUND_LATENCY
        return BOUND_COMPUTE if self.compute_s >= self.memory_s else BOUND_MEMORY


ZERO_OP = OpCost()


@dataclass(slots=True)
class StepCost:
    """A step's price: `ops` is aligned with OP_CLASSES; GPU time excludes the CPU overhead.

    With pipeline parallelism `ops` and `gpu_time_s` are one GPU's mean over the stages and
    `stage_times_s` holds each stage's time (its send to the next included); () otherwise."""

    ops: tuple[OpCost, ...]
    gpu_time_s: float
    overhead_s: float
    stage_times_s: tuple[float, ...] = ()

    @property
    def time_s(self) -> float:
        """Wall time of the step as the engine sees it."""
        return self.gpu_time_s + self.overhead_s

    @property
    def flops(self) -> float:
        return sum(op.flops for op in self.ops)

    @property
    def bytes(self) -> float:
        return sum(op.bytes for op in self.ops)

    @property
    def bound(self) -> str:
        """Compute or memory, whichever roof the step's GPU time was spent under more."""
        compute_s = sum(op.time_s for op in self.ops if op.bound == BOUND_COMPUTE)
        memory_s = sum(op.time_s for op in self.ops if op.bound == BOUND_MEMORY)
        if compute_s == 0.0 and memory_s == 0.0:
            return BOUND_IDLE if self.gpu_time_s == 0.0 else BOUND_LATENCY
        return BOUND_COMPUTE if compute_s >= memory_s else BOUND_MEMORY
