"""Where a GPU's step times come from, in one word and one sentence: calibrated, transferred
or flat.

The cost model states its sources in `assumptions()` (and `provenance()`, one entry per kernel
class). A richer statement, a `source` mapping with a `kind`, is used as given when the cost
model provides one; otherwise the GEMM entry, which dominates step time, is classified.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

KINDS = ("calibrated", "transferred", "flat")


@dataclass(frozen=True, slots=True)
class CostSource:
    kind: str  # calibrated | transferred | flat | unknown
    detail: str  # the cost model's own sentence


def cost_source(assumptions: Mapping[str, Any]) -> CostSource:
    """The source of a cost model's step times from its `assumptions()`."""
    stated = assumptions.get("source")
    if isinstance(stated, Mapping) and stated.get("kind"):
        return CostSource(str(stated["kind"]), str(stated.get("detail") or stated.get("statement") or ""))
    provenance = assumptions.get("efficiency_source") or {}
    gemm = str(provenance.get("gemm", "")) if isinstance(provenance, Mapping) else str(provenance)
    lowered = gemm.lower()
    if lowered.startswith("calibrated"):
        kind = "calibrated"
    elif lowered.startswith("transferred"):
        kind = "transferred"
    elif "flat" in lowered or lowered.startswith("default"):
        kind = "flat"
    else:
        kind = "unknown"
    return CostSource(kind, gemm)
