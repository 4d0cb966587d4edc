"""Which engine-time coefficients a run gets (`sim/data/profiles/engine/<hardware>.json`).

- The GPU's own engine profile, fitted from real vLLM runs on it (`python -m sim.calibrate
  engine`): measured.
- Otherwise the profile of another GPU, transferred: the CPU costs are the engine-core
  process's (host CPU and vLLM version, not the GPU), the runtime's GPU costs are kernel
  launches and small kernels of the same vLLM. Both are stated as transferred.
- Otherwise a serial CPU time of `cost.step_overhead_ms` per step, stated as assumed.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from sim.cost.engine_costs import EngineCosts
from sim.errors import ConfigError
from sim.hardware_spec import HardwareSpec

ENGINE_PROFILE_DIR = Path(__file__).resolve().parents[1] / "data" / "profiles" / "engine"


def engine_profile_path(hardware_name: str, directory: Path = ENGINE_PROFILE_DIR) -> Path:
    return directory / f"{hardware_name}.json"


def read_engine_profile(path: Path) -> EngineCosts:
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not a readable engine profile ({err})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("engine"), dict):
        raise ConfigError(f"{path}: expected an object with an 'engine' section")
    return EngineCosts.from_dict(raw["engine"], str(path))


def load_engine_costs(
    hardware: HardwareSpec,
    assumed_step_s: float,
    directory: Path = ENGINE_PROFILE_DIR,
    chosen: str | None = None,
) -> EngineCosts:
    """`chosen` (`cost.engine_profile`): a profile name in `directory` or a JSON path."""
    if chosen:
        path = Path(chosen)
        if not path.suffix:
            path = engine_profile_path(chosen, directory)
        if not path.is_file():
            names = ", ".join(p.stem for p in sorted(directory.glob("*.json"))) or "none"
            raise ConfigError(
                f"cost.engine_profile={chosen!r}: no such engine profile (catalog: {names});"
                " name one, or give the path of a file `python -m sim.calibrate engine` wrote"
            )
        return read_engine_profile(path)
    own = engine_profile_path(hardware.name, directory)
    if own.is_file():
        return read_engine_profile(own)
    others = sorted(directory.glob("*.json")) if directory.is_dir() else []
    if others:
        donor = read_engine_profile(others[0])
        return replace(
            donor,
            source=(
                f"transferred from {others[0].stem} ({donor.source}); the CPU costs are the"
                f" engine host's and vLLM's, assumed the same for {hardware.name}"
            ),
        )
    half = assumed_step_s / 2.0
    return replace(
        EngineCosts.assumed(),
        schedule_s=half / 2.0,
        update_s=half / 2.0,
        launch_full_s=half,
        launch_piecewise_s=half,
        launch_eager_s=half,
        source=f"assumed: {assumed_step_s * 1e3:g} ms of serial CPU per step (cost.step_overhead_ms)",
    )
