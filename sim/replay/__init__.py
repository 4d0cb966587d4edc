"""Replay a real vLLM run through the simulator and compare the two (`python -m sim.replay`).

    locate(path, run, meta) -> RunInput     the request file, its run name and meta.json
    replay(source, out_dir, ...) -> ReplayResult   simulate it and compare
    format_table / write_comparison / write_cdf_plot   the outputs
"""

from sim.replay.compare import MIN_REQUESTS_FOR_TAILS, Row, Side
from sim.replay.measured import MeasuredRun
from sim.replay.readers import FORMATS, read_run
from sim.replay.replay import ReplayResult, RunInput, locate, replay
from sim.replay.settings import EngineSettings, read_meta

__all__ = [
    "FORMATS",
    "MIN_REQUESTS_FOR_TAILS",
    "EngineSettings",
    "MeasuredRun",
    "ReplayResult",
    "Row",
    "RunInput",
    "Side",
    "locate",
    "read_meta",
    "read_run",
    "replay",
]
