"""Fits of the communication measurements beyond all-reduce: the all-to-all of expert
parallelism (calibration/measure_alltoall.py) and the send/recv between pipeline stages
(calibration/measure_p2p.py). Each is latency + traffic / bandwidth, fitted in relative error
per group size on the CUDA-graph rows (engines capture their steps in graphs; the eager rows
add the CPU's launch cost):

- all-to-all at EP = n: traffic = (n - 1) / n x the bytes each rank sends (its own share
  stays local), the bus bandwidth of nccl-tests' alltoall;
- send/recv: traffic = the message.

The profile keeps the measured points beside each fit, as it does for all-reduce.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

from sim.calibrate.fit import fit_latency_bandwidth

CommSection = dict[str, dict[str, Any]]


def fit_alltoall(rows: list[dict[str, str]]) -> tuple[CommSection, dict[str, dict[str, float]]]:
    """Per EP size: `{ep: {latency_s, bus_bandwidth, measured_bytes, measured_s}}`, and the fit
    errors by name (`alltoall_ep<n>`)."""
    return _fit_groups(rows, "ep", lambda n, b: (n - 1) / n * b, "alltoall_ep")


def fit_p2p(rows: list[dict[str, str]]) -> tuple[CommSection, dict[str, dict[str, float]]]:
    """Per (src, dst) pair: `{"0-1": {latency_s, bandwidth, ...}}`, and the fit errors
    (`p2p_<src>-<dst>`)."""
    keyed = [{**r, "pair": f"{r['src']}-{r['dst']}"} for r in rows]
    section, errors = _fit_groups(keyed, "pair", lambda _n, b: b, "p2p_")
    for fit in section.values():
        fit["bandwidth"] = fit.pop("bus_bandwidth")
    return section, errors


def measured_on(rows: list[dict[str, str]]) -> str:
    if not rows:
        return ""
    r = rows[0]
    return f"{r.get('gpus', '?')}x {r.get('gpu', '?')}, NCCL {r.get('nccl', '?')}, CUDA graphs"


def _fit_groups(
    rows: list[dict[str, str]], key: str, traffic: Callable[[Any, float], float], error_prefix: str
) -> tuple[CommSection, dict[str, dict[str, float]]]:
    by_group: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        if r.get("mode", "graph") != "graph":
            continue
        by_group[r[key]].append((float(r["bytes"]), float(r["ms"]) * 1e-3))
    section: CommSection = {}
    errors: dict[str, dict[str, float]] = {}
    for group in sorted(by_group, key=lambda g: (len(g), g)):
        points = sorted(by_group[group])
        if len(points) < 2:
            raise ValueError(f"{key}={group}: at least two message sizes are needed to fit a latency and a bandwidth")
        n = int(group) if group.isdigit() else group
        sizes = [b for b, _ in points]
        latency_s, bandwidth, error = fit_latency_bandwidth([traffic(n, b) for b in sizes], [t for _, t in points])
        section[group] = {
            "latency_s": latency_s,
            "bus_bandwidth": bandwidth,
            "measured_bytes": sizes,
            "measured_s": [t for _, t in points],
        }
        errors[f"{error_prefix}{group}"] = error.as_dict()
    return section, errors
