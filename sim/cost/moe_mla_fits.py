"""Which fused-MoE and MLA-decode curves a run gets, and what its summary says about them.

The curves (`grouped_gemm.<dtype>`, `attention_decode_mla` of a hardware profile) are fitted
by sim.calibrate.moe_mla_fit to Triton kernels of vLLM's fused_moe and TRITON_MLA designs.
They are found and transferred as the other kernel curves are (sim.cost.profiles):

- measured: the profile the run's efficiency model uses has them and is this GPU's own;
- transferred: from that profile (another GPU's), else from the nearest profile that has
  them, same generation first: the fitted fractions on this GPU's datasheet peaks and
  bandwidth, fixed costs x the boost-clock ratio;
- none (flat factors, or no profile has them): the grouped GEMM is priced as one dense GEMM
  per hit expert on the GEMM curve and MLA decode on the decode-attention curve, assumed.

Profiles are looked up by GPU name in the profile directory: a `cost.profile` given as a path
to a file elsewhere supplies the other curves, not these.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path

from sim.cost.efficiency import EfficiencyModel, tensor_peak_flops
from sim.cost.mla import MlaDecodeCurve
from sim.cost.moe import GroupedGemm, GroupedGemmCurve
from sim.cost.profiles import PROFILE_DIR, available_profiles
from sim.errors import ConfigError
from sim.hardware_spec import HardwareSpec

FALLBACK_MOE = "not measured: each hit expert priced as a dense GEMM on the GEMM curve (assumed)"
FALLBACK_MLA = "not measured: MLA decode priced on the decode-attention curve, one latent KV head (assumed)"


@dataclass(frozen=True, slots=True)
class MoeMlaKernels:
    grouped_gemm: dict[str, GroupedGemmCurve]  # by GEMM dtype
    mla_decode: MlaDecodeCurve | None
    hardware: HardwareSpec
    provenance: dict[str, str]

    def grouped_gemm_time(self, launch: GroupedGemm):
        """The launch's KernelTime, or None where no curve covers its dtype."""
        dtype = launch.gemm.dtype
        curve = self.grouped_gemm.get(dtype)
        if curve is None:
            return None
        peak = tensor_peak_flops(self.hardware.peak_flops, dtype)
        return curve.time(launch, peak, self.hardware.memory_bandwidth)

    def mla_decode_time(self, flops: float, nbytes: float, num_seqs: int):
        if self.mla_decode is None:
            return None
        peak = tensor_peak_flops(self.hardware.peak_flops, "bf16")
        return self.mla_decode.time(flops, nbytes, num_seqs, peak, self.hardware.memory_bandwidth)


def _raw(name: str, directory: Path) -> dict:
    path = directory / f"{name}.json"
    if not path.is_file():
        return {}
    return _read_json(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _read_json(path: str, mtime_ns: int) -> dict:
    """A profile file's JSON, read once per version of it (a sweep builds many cost models)."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None


def _donors(first: str, generation: str, directory: Path) -> list[tuple[str, dict]]:
    """The efficiency model's own profile, then the others of its generation, then the rest."""
    names = list(available_profiles(directory))
    raws = {n: _raw(n, directory) for n in names}
    order = sorted(names, key=lambda n: (n != first, raws[n].get("generation") != generation, n))
    return [(n, raws[n]) for n in order]


def _curves(raw: dict, scale: float) -> tuple[dict[str, GroupedGemmCurve], MlaDecodeCurve | None]:
    try:
        moe = {
            dt: dataclasses.replace(GroupedGemmCurve(**c), fixed_s=c["fixed_s"] * scale)
            for dt, c in raw.get("grouped_gemm", {}).items()
        }
        mla_raw = raw.get("attention_decode_mla")
        mla = dataclasses.replace(MlaDecodeCurve(**mla_raw), fixed_s=mla_raw["fixed_s"] * scale) if mla_raw else None
    except (KeyError, TypeError) as err:
        raise ConfigError(
            f"hardware profile's grouped_gemm / attention_decode_mla is malformed ({err});"
            " refit it with python -m sim.calibrate.moe_mla_fit"
        ) from None
    return moe, mla


def moe_mla_kernels(
    efficiency: EfficiencyModel, hardware: HardwareSpec, directory: Path = PROFILE_DIR
) -> MoeMlaKernels:
    """The curves for a run whose other kernels `efficiency` prices (see the module docstring)."""
    profile = getattr(efficiency, "profile", None)
    none = MoeMlaKernels({}, None, hardware, {"grouped_gemm": FALLBACK_MOE, "attention_decode_mla": FALLBACK_MLA})
    if profile is None:  # flat factors
        return none
    provenance = dict(none.provenance)
    moe: dict[str, GroupedGemmCurve] = {}
    mla: MlaDecodeCurve | None = None
    for name, raw in _donors(profile.hardware, hardware.generation, directory):
        clock = float(raw.get("boost_clock_mhz", 0.0))
        scale = clock / hardware.boost_clock_mhz if clock > 0 and hardware.boost_clock_mhz > 0 else 1.0
        got_moe, got_mla = _curves(raw, scale)
        where = raw.get("moe_mla_measured_on", name)
        how = "measured" if name == hardware.name else (
            f"transferred from {name} ({'same' if raw.get('generation') == hardware.generation else 'another'}"
            f" generation): fitted fractions on the {hardware.name} datasheet, fixed costs x {scale:.3g}"
        )  # fmt: skip
        if got_moe and not moe:
            moe = got_moe
            provenance["grouped_gemm"] = f"{how}; {where}; dtypes {', '.join(sorted(got_moe))}"
        if got_mla is not None and mla is None:
            mla = got_mla
            provenance["attention_decode_mla"] = f"{how}; {where}"
        if moe and mla is not None:
            break
    return MoeMlaKernels(moe, mla, hardware, provenance)
