"""Request sources: synthetic arrival processes, length samplers and trace replay.

The engine calls `build_workload(cfg, seed, ...)`: for an open-loop workload it receives
RequestSpecs in arrival order (`build_requests`); for a closed loop or multi-turn sessions, a
SessionSource that `sim.clients` draws conversations from as the engine answers.
"""

from sim.workload.build import build_requests, build_workload
from sim.workload.spec import LengthSpec, RatePoint, TraceColumns, WorkloadSpec
from sim.workload.registry import DATASETS
from sim.workload.request_spec import RequestSpec
from sim.workload.sessions import Session, SessionSource

__all__ = [
    "DATASETS",
    "LengthSpec",
    "RatePoint",
    "RequestSpec",
    "Session",
    "SessionSource",
    "TraceColumns",
    "WorkloadSpec",
    "build_requests",
    "build_workload",
]
