"""Request sources: synthetic arrival processes, length samplers and trace replay.

The engine calls `build_requests(cfg, seed, max_model_len=...)` and receives RequestSpecs in
arrival order; everything else in this package serves that one call.
"""

from sim.workload.build import build_requests
from sim.workload.config import LengthConfig, RatePoint, TraceColumns, WorkloadConfig
from sim.workload.registry import DATASETS
from sim.workload.request_spec import RequestSpec

__all__ = [
    "DATASETS",
    "LengthConfig",
    "RatePoint",
    "RequestSpec",
    "TraceColumns",
    "WorkloadConfig",
    "build_requests",
]
