"""The cost model's settings as the model code receives them: frozen, typed, past the config
boundary (`sim.config.build` makes one from the `cost` config group, whose schema holds the
documentation of each field)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CostSpec:
    gemm_efficiency: float = 0.7
    attention_efficiency: float = 0.6
    memory_efficiency: float = 0.85
    elementwise_efficiency: float = 0.6
    allreduce_efficiency: float = 0.7
    step_overhead_ms: float = 2.0
    efficiency: str = "auto"
    profile: str | None = None
    engine_profile: str | None = None
    mla_backend: str = "auto"
