"""Which MLA attention backend vLLM 0.24.0 runs on a GPU, and whether its decode is measured.

vLLM picks the backend in `vllm/platforms/cuda.py`: `check_and_update_config` forces
FLASHINFER_MLA on compute capability 10.x when `qk_nope_head_dim == 128` (else CUTLASS_MLA);
otherwise `get_attn_backend_cls` takes the first backend of `_get_backend_priorities(use_mla=True)`
that validates -- for 10.x FLASHINFER_MLA, CUTLASS_MLA, FLASH_ATTN_MLA, FLASHMLA, TRITON_MLA;
for any other capability FLASH_ATTN_MLA, FLASHMLA, FLASHINFER_MLA, TRITON_MLA. Validation is
each backend's `supports_compute_capability` and `supported_kv_cache_dtypes`
(`vllm/v1/attention/backends/mla/*.py`): FLASH_ATTN_MLA needs major 9 and a 16-bit cache,
FLASHMLA major 9 or 10, FLASHINFER_MLA and CUTLASS_MLA major 10, TRITON_MLA runs anywhere. On
ROCm (`vllm/platforms/rocm.py`) MLA is TRITON_MLA unless VLLM_ROCM_USE_AITER is set.

The GPU's compute capability comes from the hardware catalog's `generation`:
hopper (H100, H200) 9.0, blackwell (B200) 10.0, ampere (A100) 8.0 and ada (L40S) 8.9, cdna3
(MI300X) ROCm. A GPU without a generation gets TRITON_MLA, the one backend every GPU runs.

Only TRITON_MLA's decode was measured (sim.cost.mla.MlaDecodeCurve, on H200); the others are
priced on the FlashAttention decode-attention curve with one latent KV head, assumed.

DIVERGENCE: FLASH_ATTN_MLA, FLASHMLA, FLASHINFER_MLA and CUTLASS_MLA are not measured; their
decode is the FlashAttention pricing capped at the measured Triton kernel (an upper bound on
their time, see `mla_decode_provenance`).
The KV block size follows the same function (`kv_block_size`): an MLA model's block size is
forced to 64 when FlashMLA is usable (compute capability 9.x or 10.x; on Hopper whatever
backend the priorities then pick), to 64 for FLASHINFER_MLA (32 is also kept) and to 128 for
CUTLASS_MLA, unless the requested size is already a multiple; TRITON_MLA and a forced
FLASH_ATTN_MLA keep it. So DeepSeek on an H100 or H200 pages its latent cache in 64-token
blocks, as vLLM logs "Forcing kv cache block size to 64 for FlashMLA backend".

DIVERGENCE: a backend is checked against vLLM's compute-capability and KV-cache-dtype rules
only; its other validations (FlashMLA built into the wheel, DCP) are taken to pass, and ROCm's
own block-size rules (ROCM_AITER_MLA's block size of 1) are not applied.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.errors import ConfigError
from sim.hardware_spec import HardwareSpec

MLA_BACKENDS = ("auto", "flash_attn_mla", "flashmla", "flashinfer_mla", "cutlass_mla", "triton_mla")
MEASURED_BACKENDS = ("triton_mla",)  # the rest: assumed, priced on the FlashAttention curve

# compute-capability major per catalog generation; None: ROCm
_CAPABILITY: dict[str, int | None] = {"hopper": 9, "blackwell": 10, "ampere": 8, "ada": 8, "cdna3": None}
_SUPPORTED_MAJORS: dict[str, tuple[int, ...]] = {
    "flash_attn_mla": (9,),
    "flashmla": (9, 10),
    "flashinfer_mla": (10,),
    "cutlass_mla": (10,),
}
# vllm/platforms/cuda.py _get_backend_priorities(use_mla=True, ...) for capability != 10.x (on
# 10.x check_and_update_config has already forced FLASHINFER_MLA or CUTLASS_MLA)
_PRIORITIES = ("flash_attn_mla", "flashmla", "flashinfer_mla", "triton_mla")


@dataclass(frozen=True, slots=True)
class MlaBackend:
    name: str  # one of MLA_BACKENDS but "auto"
    why: str  # how it was chosen, for the summary

    @property
    def measured(self) -> bool:
        return self.name in MEASURED_BACKENDS

    @property
    def vllm_name(self) -> str:
        return self.name.upper()


def _invalid(name: str, major: int | None, kv_cache_dtype: str) -> str | None:
    """Why vLLM's `validate_configuration` would refuse `name` here, or None."""
    if name == "triton_mla":
        return None
    if major is None:
        return "vLLM's ROCm platform runs MLA on TRITON_MLA (or ROCM_AITER_MLA), not on this backend"
    if major not in _SUPPORTED_MAJORS[name]:
        majors = " or ".join(f"{m}.x" for m in _SUPPORTED_MAJORS[name])
        return f"{name.upper()} needs compute capability {majors}, this GPU has {major}.x"
    if name == "flash_attn_mla" and kv_cache_dtype not in ("bf16", "fp16"):
        return f"FLASH_ATTN_MLA takes a bf16/fp16 KV cache only, not {kv_cache_dtype}"
    return None


def check_mla_backend_name(choice: str) -> None:
    """Refuse a name that is no backend (every run, MLA model or not: a typo must not pass)."""
    if choice not in MLA_BACKENDS:
        raise ConfigError(f"cost.mla_backend={choice!r} is not an MLA backend; use one of {', '.join(MLA_BACKENDS)}")


def _blackwell_backend(qk_nope_head_dim: int) -> str:
    """What `check_and_update_config` forces on compute capability 10.x: FlashInfer's MLA
    kernel takes qk_nope_head_dim 128 only."""
    return "flashinfer_mla" if qk_nope_head_dim == 128 else "cutlass_mla"


def resolve_mla_backend(
    choice: str, hardware: HardwareSpec, kv_cache_dtype: str, qk_nope_head_dim: int
) -> MlaBackend:
    """The backend `choice` ("auto" or a name) means on `hardware`, refusing one vLLM would refuse."""
    check_mla_backend_name(choice)
    generation = hardware.generation
    if generation not in _CAPABILITY:
        if choice in ("auto", "triton_mla"):
            why = "auto" if choice == "auto" else "set"
            return MlaBackend("triton_mla", f"{why}: {hardware.name} has no known generation, TRITON_MLA runs on every GPU")
        raise ConfigError(
            f"cost.mla_backend={choice}: {hardware.name} has no known generation (hardware.generation), so its"
            " compute capability is unknown; set hardware.generation or cost.mla_backend=triton_mla"
        )
    major = _CAPABILITY[generation]
    where = f"{generation}, ROCm" if major is None else f"{generation}, compute capability {major}.x"
    if choice != "auto":
        reason = _invalid(choice, major, kv_cache_dtype)
        if reason is not None:
            raise ConfigError(f"cost.mla_backend={choice} on {hardware.name}: {reason} (vLLM refuses it); use auto")
        return MlaBackend(choice, f"set, {where}")
    if major is None:
        return MlaBackend("triton_mla", f"auto: vLLM's choice on {where}, without VLLM_ROCM_USE_AITER")
    if major == 10:  # check_and_update_config forces these on Blackwell
        name = _blackwell_backend(qk_nope_head_dim)
        return MlaBackend(name, f"auto: vLLM's choice on {where}, qk_nope_head_dim {qk_nope_head_dim}")
    name = next(b for b in _PRIORITIES if _invalid(b, major, kv_cache_dtype) is None)
    return MlaBackend(name, f"auto: vLLM's choice on {where}, {kv_cache_dtype} KV cache")


def kv_block_size(requested: int, hardware: HardwareSpec, choice: str, qk_nope_head_dim: int) -> tuple[int, str]:
    """The KV block size vLLM 0.24.0 runs an MLA model with, and why (empty: as requested).

    `vllm/platforms/cuda.py` `check_and_update_config`: with no backend set, Blackwell forces
    FLASHINFER_MLA (qk_nope_head_dim 128) or CUTLASS_MLA, and any GPU where FlashMLA's dense
    kernel runs (9.x, 10.x) takes the FlashMLA rule; a set backend takes its own rule."""
    major = _CAPABILITY.get(hardware.generation or "")
    if major is None:  # ROCm or an unknown GPU: TRITON_MLA, any block size
        return requested, ""
    if choice == "auto":
        rule = _blackwell_backend(qk_nope_head_dim) if major == 10 else ("flashmla" if major == 9 else "")
    else:
        rule = choice if choice in ("flashmla", "flashinfer_mla", "cutlass_mla") else ""
    if rule == "flashmla" and requested % 64:
        size = 64
    elif rule == "flashinfer_mla" and requested != 32 and requested % 64:
        size = 64
    elif rule == "cutlass_mla" and requested % 128:
        size = 128
    else:
        return requested, ""
    reason = "FlashMLA's kernel runs there" if choice == "auto" and rule == "flashmla" else f"{rule.upper()}"
    why = (
        f"{size}, not scheduler.block_size={requested}: vLLM forces it on {hardware.name} for an MLA"
        f" model ({reason}; vllm/platforms/cuda.py check_and_update_config)"
    )
    return size, why


ASSUMED_MLA = (
    "assumed, not measured: priced on the FlashAttention decode curve (one latent KV head), capped at"
    " the measured TRITON_MLA kernel's time (cost.mla_backend=triton_mla), taken as an upper bound"
)
UNCAPPED_MLA = "assumed, not measured: priced on the FlashAttention decode curve (one latent KV head)"


def mla_decode_provenance(backend: MlaBackend, curve_provenance: str, capped: bool, brief: bool = False) -> str:
    """`efficiency_source.attention_decode_mla`: the backend, how it was chosen, measured or assumed.
    `curve_provenance` says where the TRITON_MLA curve came from (sim.cost.moe_mla_fits);
    `capped`: that curve prices this run (it exists and the latent cache is bf16); `brief`:
    the summary's `assumptions.mla_attention` and the printed `mla decode` line, which name
    the curve's source only when it prices the backend itself.

    A backend other than TRITON_MLA is priced on the FlashAttention curve, but never above the
    measured Triton kernel: vLLM ranks it before TRITON_MLA, and FA3-MLA, FlashMLA and the
    Blackwell kernels are written for the tensor cores the Triton kernel leaves idle (it runs
    128 heads per GPU at 11% of the bf16 peak). At 16 heads and short contexts the
    FlashAttention curve alone would price above the Triton kernel (up to 27% at 256 tokens)."""
    head = f"{backend.vllm_name} ({backend.why})"
    if not capped:  # no TRITON_MLA curve, or an fp8 latent cache it does not cover
        return f"{head}: {UNCAPPED_MLA}"
    if not backend.measured:
        return f"{head}: {ASSUMED_MLA}" + ("" if brief else f" (the TRITON_MLA curve: {curve_provenance})")
    return f"{head}: priced on a split-KV Triton kernel of its design: {curve_provenance}"
