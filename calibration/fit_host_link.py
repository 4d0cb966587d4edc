"""Fit the host link's price from calibration/data/h200_host_link.csv (measure_host_link.py).

    python calibration/fit_host_link.py [CSV]

Per direction (h2d: loads, d2h: stores), least squares of
  - contiguous copies of 8 MiB or more: time = latency + bytes / bandwidth;
  - per-block copies (one memcpy per block, 16 or more blocks), bandwidth fixed:
    time = a + copies x per_copy + bytes / bandwidth.
Prints both directions and their mean, which configs/hardware/h200.yaml carries as
host_link_bandwidth_gbps, host_link_latency_us and host_link_per_copy_us
(tests/test_kv_offload_config.py checks they agree). Standard library only.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

DEFAULT_CSV = Path(__file__).parent / "data" / "h200_host_link.csv"
MIB = 2**20


def _line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Intercept and slope of the least-squares line."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def fit(path: Path = DEFAULT_CSV) -> dict[str, dict[str, float]]:
    rows = list(csv.DictReader(open(path)))
    out: dict[str, dict[str, float]] = {}
    for direction in ("h2d", "d2h"):
        mine = [r for r in rows if r["dir"] == direction]
        big = [r for r in mine if r["mode"] == "contiguous"
               and int(r["block_bytes"]) * int(r["n_blocks"]) >= 8 * MIB]  # fmt: skip
        latency_us, us_per_byte = _line(
            [int(r["block_bytes"]) * int(r["n_blocks"]) for r in big],
            [float(r["median_us"]) for r in big],
        )
        many = [r for r in mine if r["mode"] == "per_block" and int(r["n_blocks"]) >= 16]
        _, per_copy_us = _line(
            [int(r["n_blocks"]) for r in many],
            [float(r["median_us"]) - us_per_byte * int(r["block_bytes"]) * int(r["n_blocks"])
             for r in many],
        )  # fmt: skip
        out[direction] = {
            "bandwidth_gbps": 1e-3 / us_per_byte,
            "latency_us": latency_us,
            "per_copy_us": per_copy_us,
        }
    out["mean"] = {k: (out["h2d"][k] + out["d2h"][k]) / 2 for k in out["h2d"]}
    return out


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_CSV
    for name, f in fit(path).items():
        print(f"{name:5s} bandwidth {f['bandwidth_gbps']:6.2f} GB/s   latency {f['latency_us']:5.1f} us"
              f"   per copy {f['per_copy_us']:4.2f} us")


if __name__ == "__main__":
    main()
