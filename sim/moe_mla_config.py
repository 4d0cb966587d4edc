"""MoE and MLA fields of a Hugging Face config.json, and the checks a model's MoE/MLA shapes need.

Families read (transformers' config classes, as vLLM 0.24.0 loads them):
- Mixtral (`num_local_experts`, `num_experts_per_tok`; experts of intermediate_size);
- Qwen3-MoE (`num_experts`, `num_experts_per_tok`, `moe_intermediate_size`; every layer MoE:
  `decoder_sparse_step` 1 and no `mlp_only_layers`; per-head q/k RMSNorm);
- DeepSeek-V2/V3 (`n_routed_experts`, `num_experts_per_tok`, `moe_intermediate_size`,
  `n_shared_experts`, `first_k_dense_replace` dense layers first, `moe_layer_freq` 1; MLA:
  `kv_lora_rank`, `q_lora_rank` (null: a plain q_proj), `qk_nope_head_dim`,
  `qk_rope_head_dim`, `v_head_dim`).

A partial description is refused, never read as dense: an expert width without an expert count,
a top-k without experts, an MLA rank without its head dims, a layout we do not model
(Qwen2-MoE's separate shared-expert width, MoE every other layer).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sim.errors import ConfigError
from sim.model_spec import ModelSpec

EXPERT_COUNT_KEYS = ("n_routed_experts", "num_experts")
_MLA_KEYS = ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
_MOE_ONLY_KEYS = ("moe_intermediate_size", "n_shared_experts", "first_k_dense_replace")


def _int(raw: Mapping[str, Any], key: str, path: Path, default: int = 0) -> int:
    value = raw.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{path}: field {key!r} must be a non-negative integer, got {value!r}")
    return value


def refuse_partial_moe(raw: Mapping[str, Any], path: Path) -> None:
    """No expert count: any other MoE field means the file describes an MoE we cannot read."""
    found = [key for key in (*_MOE_ONLY_KEYS, "shared_expert_intermediate_size") if raw.get(key)]
    if found:
        raise ConfigError(
            f"{path}: {', '.join(found)} set but no expert count (num_local_experts, "
            "n_routed_experts or num_experts); give the expert count, or remove the MoE fields"
        )


def hf_moe_mla_fields(raw: Mapping[str, Any], path: Path) -> dict[str, int | bool]:
    """The ModelConfig MoE/MLA fields of a config.json (zero where the family has none)."""
    fields: dict[str, int | bool] = {key: _int(raw, key, path) for key in _MOE_ONLY_KEYS}
    if raw.get("shared_expert_intermediate_size"):
        raise ConfigError(
            f"{path}: shared_expert_intermediate_size (a Qwen2-MoE gated shared expert) is not "
            "modelled; DeepSeek's n_shared_experts of moe_intermediate_size is"
        )
    if _int(raw, "moe_layer_freq", path, 1) != 1 or _int(raw, "decoder_sparse_step", path, 1) != 1:
        raise ConfigError(f"{path}: MoE on only some layers (moe_layer_freq / decoder_sparse_step > 1) is not modelled")
    if raw.get("mlp_only_layers"):
        raise ConfigError(f"{path}: mlp_only_layers (dense layers among MoE ones) is not modelled")
    present = [key for key in _MLA_KEYS if raw.get(key) is not None]
    if present and len(present) < len(_MLA_KEYS):
        missing = [key for key in _MLA_KEYS if key not in present]
        raise ConfigError(f"{path}: MLA fields {', '.join(present)} given without {', '.join(missing)}")
    for key in (*_MLA_KEYS, "q_lora_rank"):
        fields[key] = _int(raw, key, path)
    fields["qk_norm"] = str(raw.get("model_type", "")).startswith("qwen3")
    return fields


def check_moe_mla(spec: ModelSpec, origin: str) -> None:
    """What the shapes must satisfy beyond positivity."""
    if not spec.is_moe:
        extra = [key for key in _MOE_ONLY_KEYS if getattr(spec, key)]
        if extra:
            raise ConfigError(f"{origin}: {', '.join(extra)} set but num_local_experts is 0; give the expert count")
    elif spec.first_k_dense_replace >= spec.num_hidden_layers:
        raise ConfigError(
            f"{origin}: first_k_dense_replace ({spec.first_k_dense_replace}) leaves no MoE layer "
            f"of {spec.num_hidden_layers}"
        )
    mla = [getattr(spec, key) for key in _MLA_KEYS]
    if any(mla) and not all(mla):
        raise ConfigError(
            f"{origin}: MLA needs kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim and v_head_dim "
            f"all > 0, got {dict(zip(_MLA_KEYS, mla))}"
        )
    if spec.q_lora_rank and not spec.is_mla:
        raise ConfigError(f"{origin}: q_lora_rank is an MLA field; set kv_lora_rank and the MLA head dims")
