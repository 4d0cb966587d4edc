"""Which efficiency model a run gets, and what its summary must say about where it came from
and how far to trust it.

`cost.efficiency`:
- `auto` (default): the GPU's own fitted profile (`sim/data/profiles/<hardware>.json`) when
  there is one; otherwise the nearest calibrated GPU's profile, transferred (its fitted
  fractions and fixed costs on this GPU's datasheet peaks and bandwidth); otherwise the flat
  factors of the config.
- `calibrated`: like auto, but refuse anything below a profile of this GPU or its generation
  (a profile named by `cost.profile` is taken as asked, its transfer stated).
- `flat`: the flat factors of the config, whatever exists.

`cost.profile` names a profile (a catalog name or a path to a JSON file) to use instead.

**Nearest.** Same generation first (`HardwareSpec.generation`); among several, the one on the
same interconnect, then the nearest boost clock, then by name. Failing that, the nearest
generation in `GENERATION_ORDER` (NVIDIA's, oldest first), the newer on a tie, then as within a
generation. AMD's CDNA3 has
no place in NVIDIA's order: `GENERATION_PEER` declares its peer (Hopper: the same years, HBM3,
matrix units of the same class), an assumption, and its transfer counts as across generations.

**Fixed costs** (seconds per kernel) are clock cycles of the calibrated GPU: launch gaps inside
a CUDA graph, prologues, the last wave. They scale with the boost-clock ratio (calibrated /
target), the one clock a datasheet gives; within Hopper the SXM parts share 1980 MHz.

**Uncertainty** (`CostSource`), one per kind of source:
- calibrated (own profile): the step error measured on its own GPU (`validation.own`);
- transferred within a generation: the error measured transferring it to another GPU of its
  generation (`validation.transfer`, H100 -> H200);
- transferred across generations: not measured; assumed `ACROSS_GENERATION_ERROR`;
- flat: assumed `FLAT_ERROR` (the flat factors measured 14-18% median on H100/H200).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sim.cost.calibrated import AllreduceFit, CalibratedEfficiency, Profile
from sim.cost.efficiency import EFFICIENCY_KINDS, FLAT_ERROR, EfficiencyModel, FlatEfficiency
from sim.errors import ConfigError
from sim.hardware_spec import HardwareSpec

if TYPE_CHECKING:
    from sim.cost.cost_spec import CostSpec

PROFILE_DIR = Path(__file__).resolve().parents[1] / "data" / "profiles"
EFFICIENCY_MODES = ("auto", "calibrated", "flat")
GENERATION_ORDER = ("volta", "turing", "ampere", "ada", "hopper", "blackwell")
GENERATION_PEER = {"cdna3": "hopper"}
# Assumed median step errors where nothing was measured. Across generations the kernels,
# tiles and libraries change (no wgmma on Ampere, tcgen05 on Blackwell, ROCm on CDNA3), so
# the error is taken as larger than the flat factors' measured 14-18% on Hopper.
ACROSS_GENERATION_ERROR = 0.25


@dataclass(frozen=True, slots=True)
class CostSource:
    """Where a run's step times come from and how far to trust them."""

    kind: str  # calibrated | transferred_within_generation | transferred_across_generations | flat
    profile: str  # the profile's GPU, "" for flat
    median_error: float  # of step time
    p90_error: float | None
    measured: bool  # False: the error is assumed

    def describe(self) -> str:
        basis = "measured" if self.measured else "assumed, not measured"
        p90 = f", {self.p90_error:.0%} p90" if self.p90_error is not None else ""
        err = f"step error ~{self.median_error:.0%} median{p90}, {basis}"
        return {
            "calibrated": f"calibrated on {self.profile} ({err})",
            "transferred_within_generation": f"transferred from {self.profile}, same generation ({err})",
            "transferred_across_generations": f"transferred from {self.profile}, another generation ({err})",
            "flat": f"flat factors, not calibrated ({err})",
        }[self.kind]


FLAT_SOURCE = CostSource("flat", "", FLAT_ERROR, None, False)


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


def _position(generation: str) -> int | None:
    generation = GENERATION_PEER.get(generation, generation)
    return GENERATION_ORDER.index(generation) if generation in GENERATION_ORDER else None


def find_profile(hardware: HardwareSpec, directory: Path = PROFILE_DIR) -> tuple[Profile | None, str]:
    """The profile to use for `hardware` and how it relates: 'own', 'within' (same
    generation), 'across' (nearest other generation) or 'none'."""
    names = available_profiles(directory)
    if hardware.name in names:
        return load_profile(hardware.name, directory), "own"
    profiles = [load_profile(n, directory) for n in names]

    def alike(p: Profile) -> tuple[bool, float, str]:  # same interconnect, nearest clock, name
        return p.interconnect != hardware.interconnect, abs(p.boost_clock_mhz - hardware.boost_clock_mhz), p.hardware

    same = [p for p in profiles if hardware.generation and p.generation == hardware.generation]
    if same:
        return min(same, key=alike), "within"
    here = _position(hardware.generation)
    ranked = [((abs(pos - here), -pos, *alike(p)), p) for p in profiles
              if here is not None and (pos := _position(p.generation)) is not None]
    if ranked:
        return min(ranked, key=lambda r: r[0])[1], "across"
    return None, "none"


def cost_source(profile: Profile, relation: str) -> CostSource:
    """The stated uncertainty of `profile` used as `relation` ('own', 'within', 'across')."""
    if relation == "own":
        v = profile.validation.get("own")
        if v:
            return CostSource("calibrated", profile.hardware, v["median"], v.get("p90"), True)
        return CostSource("calibrated", profile.hardware, ACROSS_GENERATION_ERROR, None, False)
    if relation == "within":
        v = profile.validation.get("transfer")
        if v:
            return CostSource("transferred_within_generation", profile.hardware, v["median"], v.get("p90"), True)
        return CostSource("transferred_within_generation", profile.hardware, ACROSS_GENERATION_ERROR, None, False)
    return CostSource("transferred_across_generations", profile.hardware, ACROSS_GENERATION_ERROR, None, False)


def _fp8kv_donor(profile: Profile, directory: Path) -> Profile | None:
    """A profile of the same generation with measured FP8-KV attention curves."""
    if profile.attention_prefill_fp8kv is not None and profile.attention_decode_fp8kv is not None:
        return profile
    for name in available_profiles(directory):
        other = load_profile(name, directory)
        if other.generation == profile.generation and other.attention_decode_fp8kv is not None \
                and other.attention_prefill_fp8kv is not None:
            return other
    return None


def build_efficiency(
    hardware: HardwareSpec,
    cost_cfg: CostSpec,
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
        profile = load_profile(cost_cfg.profile, directory)
        relation = "own" if profile.hardware == hardware.name else (
            "within" if profile.generation == hardware.generation else "across")
    else:
        profile, relation = find_profile(hardware, directory)
    if mode == "calibrated" and relation not in ("own", "within") and not cost_cfg.profile:
        raise ConfigError(
            f"no calibrated profile for {hardware.name} (generation {hardware.generation!r})"
            f" or its generation; available: {', '.join(available_profiles(directory))}."
            " Use cost.efficiency=auto (nearest generation, transferred) or flat, or measure it"
            " with python -m sim.calibrate"
        )
    if profile is None:
        return flat
    source = cost_source(profile, relation)
    scale = 1.0
    if profile.boost_clock_mhz > 0 and hardware.boost_clock_mhz > 0:
        scale = profile.boost_clock_mhz / hardware.boost_clock_mhz
    if relation == "own":
        what = f"calibrated on {profile.hardware} ({profile.measured_on})"
    else:
        what = (
            f"transferred from {profile.hardware} ({profile.measured_on}): its fitted fractions"
            f" on the {hardware.name} datasheet peaks and bandwidth, fixed costs x {scale:.3g}"
            f" (boost clock {profile.boost_clock_mhz:.0f} / {hardware.boost_clock_mhz:.0f} MHz)"
        )
    provenance = {kind: what for kind in EFFICIENCY_KINDS}
    provenance["cost_model"] = source.describe()
    provenance["allreduce"] = _allreduce_provenance(profile, hardware)
    donor = _fp8kv_donor(profile, directory)
    fp8kv = None
    if donor is None:
        provenance["attention_fp8kv"] = (
            "no FP8-KV attention measured for this generation: the bf16 curves at the fp8"
            " tensor rate (assumed)"
        )
    else:
        fp8kv = (donor.attention_prefill_fp8kv, donor.attention_decode_fp8kv)
        how = "measured" if donor.hardware == hardware.name else f"transferred from {donor.hardware}"
        provenance["attention_fp8kv"] = (
            f"FP8-KV attention {how}: a paged Triton kernel of vLLM's TRITON_ATTN design on"
            f" {donor.fp8kv_measured_on or donor.hardware} (reads FP8, bf16 products);"
            " FlashAttention-3's FP8 path not measured"
        )
    scaled = profile.with_fixed_scale(scale)
    if fp8kv is not None:
        fp8kv = tuple(dataclasses.replace(c, fixed_s=c.fixed_s * scale) for c in fp8kv)
    fallback = AllreduceFit(
        latency_s=hardware.interconnect_latency_s,
        bus_bandwidth=hardware.interconnect_bandwidth * cost_cfg.allreduce_efficiency,
    )
    return CalibratedEfficiency(scaled, hardware, q_heads, kv_heads, provenance, fallback, fp8kv)


def _allreduce_provenance(profile: Profile, hardware: HardwareSpec) -> str:
    if not profile.allreduce or hardware.interconnect != profile.interconnect:
        return (
            f"default: datasheet {hardware.interconnect} bandwidth x flat factor"
            f" (profile {profile.hardware} measured {profile.interconnect or 'no'} all-reduce)"
        )
    sizes = sorted(profile.allreduce)
    text = (
        f"measured {profile.interconnect} all-reduce on {profile.allreduce_measured_on}"
        f" (TP {', '.join(str(tp) for tp in sizes)}), applied to {hardware.name}'s {hardware.interconnect}"
    )
    ring = profile.allreduce_extrapolation
    if ring is None:
        return text + f"; TP sizes above {sizes[-1]}: datasheet bandwidth"
    return text + (
        f"; other TP sizes extrapolated by NCCL's ring from the largest measured one below,"
        f" e.g. {ring.formula(sizes[-1], 2 * sizes[-1])}"
    )
