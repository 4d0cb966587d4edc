"""Which efficiency model a run gets, and what its summary must say about where it came from.

`cost.efficiency`:
- `auto` (default): the GPU's own fitted profile (`sim/data/profiles/<hardware>.json`) when
  there is one; otherwise the profile of a calibrated GPU of the same generation, transferred
  (its fitted fractions and fixed costs on this GPU's datasheet peaks and bandwidth);
  otherwise the flat factors of the config.
- `calibrated`: like auto, but refuse to run without a profile of this GPU or its generation.
- `flat`: the flat factors of the config, whatever exists.

`cost.profile` names a profile (a catalog name or a path to a JSON file) to use instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from sim.cost.calibrated import AllreduceFit, CalibratedEfficiency, Profile
from sim.cost.efficiency import EFFICIENCY_KINDS, EfficiencyModel, FlatEfficiency
from sim.errors import ConfigError
from sim.hardware_spec import HardwareSpec

if TYPE_CHECKING:
    from sim.config.schema import CostConfig

PROFILE_DIR = Path(__file__).resolve().parents[1] / "data" / "profiles"
EFFICIENCY_MODES = ("auto", "calibrated", "flat")


def available_profiles(directory: Path = PROFILE_DIR) -> dict[str, Path]:
    return {p.stem: p for p in sorted(directory.glob("*.json"))}


def load_profile(name_or_path: str, directory: Path = PROFILE_DIR) -> Profile:
    path = Path(name_or_path)
    if not path.suffix:
        path = directory / f"{name_or_path}.json"
    if not path.is_file():
        names = ", ".join(available_profiles(directory)) or "none"
        raise ConfigError(f"no hardware profile {name_or_path!r} (available: {names})")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None
    return Profile.from_dict(raw)


def find_profile(hardware: HardwareSpec, directory: Path = PROFILE_DIR) -> tuple[Profile | None, str]:
    """The profile to use for `hardware` and how it relates: 'own', 'transferred' or 'none'."""
    profiles = available_profiles(directory)
    if hardware.name in profiles:
        return load_profile(hardware.name, directory), "own"
    for name in profiles:
        profile = load_profile(name, directory)
        if hardware.generation and profile.generation == hardware.generation:
            return profile, "transferred"
    return None, "none"


def build_efficiency(
    hardware: HardwareSpec,
    cost_cfg: CostConfig,
    q_heads: int,
    kv_heads: int,
    directory: Path = PROFILE_DIR,
) -> EfficiencyModel:
    mode = cost_cfg.efficiency
    if mode not in EFFICIENCY_MODES:
        raise ConfigError(
            f"cost.efficiency={mode!r} is unknown; choose one of {', '.join(EFFICIENCY_MODES)}"
        )
    flat = FlatEfficiency.from_config(cost_cfg, hardware)
    if mode == "flat":
        return flat
    if cost_cfg.profile:
        profile, relation = load_profile(cost_cfg.profile, directory), "named"
    else:
        profile, relation = find_profile(hardware, directory)
    if profile is None:
        if mode == "calibrated":
            raise ConfigError(
                f"no calibrated profile for {hardware.name} (generation {hardware.generation!r})"
                f" or its generation; available: {', '.join(available_profiles(directory))}."
                " Use cost.efficiency=auto or flat, or measure it with python -m sim.calibrate"
            )
        return flat
    own = relation == "own" or (relation == "named" and profile.hardware == hardware.name)
    source = (
        f"calibrated on {profile.hardware} ({profile.measured_on})"
        if own
        else f"transferred from {profile.hardware} ({profile.measured_on}): its fitted fractions"
        f" and fixed costs on the {hardware.name} datasheet peaks and bandwidth"
    )
    provenance = {kind: source for kind in EFFICIENCY_KINDS}
    fallback = AllreduceFit(
        latency_s=hardware.interconnect_latency_s,
        bus_bandwidth=hardware.interconnect_bandwidth * cost_cfg.allreduce_efficiency,
    )
    if profile.allreduce and hardware.interconnect == profile.interconnect:
        provenance["allreduce"] = (
            f"measured {profile.interconnect} all-reduce on {profile.allreduce_measured_on}"
            f" (TP sizes {', '.join(str(tp) for tp in sorted(profile.allreduce))}), applied to"
            f" {hardware.name}'s {hardware.interconnect}; other TP sizes: datasheet bandwidth"
        )
    else:
        provenance["allreduce"] = (
            f"default: datasheet {hardware.interconnect} bandwidth x flat factor"
            f" (profile {profile.hardware} measured {profile.interconnect or 'no'} all-reduce)"
        )
    return CalibratedEfficiency(profile, hardware, q_heads, kv_heads, provenance, fallback)
