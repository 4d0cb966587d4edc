"""Schema of the `workload` config group (registered through `sim.config.schema`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING


@dataclass
class LengthConfig:
    """A token-length distribution. `kind` picks which fields apply."""

    kind: str = "fixed"  # fixed | uniform | lognormal | normal | exponential
    value: Optional[int] = None  # fixed
    low: Optional[int] = None  # uniform (inclusive)
    high: Optional[int] = None
    mean: Optional[float] = None  # lognormal / normal / exponential: mean of the unclipped law
    std: Optional[float] = None  # lognormal / normal
    min: int = 1  # clipping bounds applied to every kind
    max: Optional[int] = None


@dataclass
class WorkloadConfig:
    name: str = MISSING
    arrival: str = "poisson"  # poisson
    rate: float = 1.0  # requests per second
    num_requests: Optional[int] = None
    duration_s: Optional[float] = None
    prompt_tokens: LengthConfig = field(default_factory=LengthConfig)
    output_tokens: LengthConfig = field(default_factory=LengthConfig)
