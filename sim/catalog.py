"""The config -> spec boundary for models, accelerators and numeric formats.

Hydra's `DictConfig` stops here: each `*_spec_from_config` takes a group's config (the schema
dataclass or a `DictConfig` of it), checks what the schema cannot (positive sizes, known dtypes,
a GEMM dtype the chip has tensor cores for) and returns a frozen spec in SI units (FLOP/s,
bytes/s, bytes, seconds). Every refusal is a `ConfigError` that names the field and what would
work instead. `list_catalog` and `load_catalog_entry` read the YAML files under `configs/`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

import sim
from sim.config.schema import HardwareConfig, ModelConfig, PrecisionConfig
from sim.errors import ConfigError
from sim.hardware_spec import HardwareSpec
from sim.moe_mla_config import (
    EXPERT_COUNT_KEYS,
    check_moe_mla,
    hf_moe_mla_fields,
    refuse_partial_moe,
)
from sim.model_spec import ModelSpec
from sim.precision import (
    COMPUTE_DTYPES,
    DTYPE_BYTES,
    KV_CACHE_DTYPES,
    REFERENCE_PRECISIONS,
    WEIGHT_DTYPES,
    PrecisionSpec,
    resolve_kv_cache_dtype,
)

CONFIGS_DIR = Path(sim.__file__).parents[1] / "configs"

TFLOPS = 1e12  # FLOP/s per TFLOP/s
TB_PER_S = 1e12  # bytes/s per TB/s
GB_PER_S = 1e9  # bytes/s per GB/s
GIB = 2**30  # bytes per GiB
US = 1e-6  # seconds per microsecond

_SCHEMAS: dict[str, type] = {
    "model": ModelConfig,
    "hardware": HardwareConfig,
    "precision": PrecisionConfig,
}


# ---- the YAML catalog ---------------------------------------------------------------------------


def list_catalog(group: str) -> list[str]:
    """Names of the YAML files in configs/<group>/, i.e. what `group=NAME` accepts."""
    folder = CONFIGS_DIR / group
    if not folder.is_dir():
        groups = sorted(p.name for p in CONFIGS_DIR.iterdir() if p.is_dir())
        raise ConfigError(f"no config group {group!r}; the groups are: {', '.join(groups)}")
    return sorted(path.stem for path in folder.glob("*.yaml"))


def load_catalog_entry(group: str, name: str) -> DictConfig:
    """One catalog file merged onto its schema, so a misspelt key is an error naming it."""
    names = list_catalog(group)
    if name not in names:
        raise ConfigError(f"no {group} named {name!r}; choose one of: {', '.join(names)}")
    schema = OmegaConf.structured(_SCHEMAS[group]) if group in _SCHEMAS else OmegaConf.create()
    return OmegaConf.merge(schema, OmegaConf.load(CONFIGS_DIR / group / f"{name}.yaml"))


# ---- model -------------------------------------------------------------------------------------

_POSITIVE_MODEL_FIELDS = (
    "num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
    "head_dim", "intermediate_size", "vocab_size", "max_position_embeddings",
)  # fmt: skip


def model_spec_from_config(cfg: ModelConfig | DictConfig | Mapping[str, Any]) -> ModelSpec:
    """The model's shapes; with `hf_config_path` set, the architecture comes from that file."""
    fields = _as_dict(cfg)
    origin = f"model {fields.get('name')!r}"
    if fields.get("hf_config_path"):
        path = Path(fields["hf_config_path"]).expanduser()
        fields = {**fields, **_fields_from_hf_config(path, fields)}
        origin = str(path)
    size = {field: _int_field(fields, field, origin) for field in _POSITIVE_MODEL_FIELDS}
    hidden, heads = size["hidden_size"], size["num_attention_heads"]
    if not size["head_dim"] and heads > 0 and hidden % heads:
        raise ConfigError(
            f"{origin}: hidden_size ({hidden}) is not a multiple of num_attention_heads ({heads}) "
            "and no head_dim is given; set head_dim, or fix the head count"
        )
    spec = ModelSpec(
        name=_name(fields, "model"),
        num_hidden_layers=size["num_hidden_layers"],
        hidden_size=hidden,
        num_attention_heads=heads,
        num_key_value_heads=size["num_key_value_heads"],
        head_dim=size["head_dim"] or (hidden // heads if heads > 0 else 0),
        intermediate_size=size["intermediate_size"],
        vocab_size=size["vocab_size"],
        tie_word_embeddings=_bool_field(fields, "tie_word_embeddings", origin),
        attention_bias=_bool_field(fields, "attention_bias", origin),
        num_local_experts=_int_field(fields, "num_local_experts", origin),
        num_experts_per_tok=_int_field(fields, "num_experts_per_tok", origin),
        max_position_embeddings=size["max_position_embeddings"],
        display_name=str(fields.get("display_name") or ""),
        published_params_b=fields.get("published_params_b"),
        qk_norm=_bool_field(fields, "qk_norm", origin),
        **{key: _int_field(fields, key, origin) for key in _MOE_MLA_FIELDS},
    )
    _check_model(spec, origin)
    check_moe_mla(spec, origin)
    return spec


_MOE_MLA_FIELDS = (
    "moe_intermediate_size", "n_shared_experts", "first_k_dense_replace",
    "kv_lora_rank", "q_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
)  # fmt: skip


def _int_field(fields: Mapping[str, Any], key: str, origin: str, default: int | None = 0) -> int:
    """An integer field (absent or null: `default`; None: required); a float, string or
    boolean is refused, not cut."""
    value = fields.get(key)
    if value is None:
        if default is None:
            raise ConfigError(f"{origin}: required field {key!r} is missing")
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{origin}: field {key!r} must be an integer, got {value!r}")
    return value


def _bool_field(fields: Mapping[str, Any], key: str, origin: str, default: bool = False) -> bool:
    """A boolean field (absent or null: `default`); `bool("no")` is True, so strings and
    numbers are refused."""
    value = fields.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"{origin}: field {key!r} must be true or false, got {value!r}")
    return value


def _check_model(spec: ModelSpec, origin: str) -> None:
    for field in _POSITIVE_MODEL_FIELDS:
        if getattr(spec, field) <= 0:
            raise ConfigError(f"{origin}: {field} must be > 0, got {getattr(spec, field)}")
    if spec.num_attention_heads % spec.num_key_value_heads:
        raise ConfigError(
            f"{origin}: num_attention_heads ({spec.num_attention_heads}) must be a multiple of "
            f"num_key_value_heads ({spec.num_key_value_heads}) for grouped-query attention"
        )
    if spec.num_local_experts < 0:
        raise ConfigError(f"{origin}: num_local_experts must be >= 0 (0 for a dense model)")
    if spec.is_moe and not 1 <= spec.num_experts_per_tok <= spec.num_local_experts:
        raise ConfigError(
            f"{origin}: num_experts_per_tok must be between 1 and num_local_experts "
            f"({spec.num_local_experts}), got {spec.num_experts_per_tok}"
        )
    if not spec.is_moe and spec.num_experts_per_tok:
        raise ConfigError(f"{origin}: num_experts_per_tok is set but num_local_experts is 0")


# ---- Hugging Face config.json --------------------------------------------------------------------

_HF_REQUIRED = (
    "num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size",
)  # fmt: skip
# Families whose transformers config class defaults tie_word_embeddings to False; transformers'
# base PretrainedConfig (any other family) defaults it to True.
_UNTIED_BY_DEFAULT = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "deepseek")


def _fields_from_hf_config(path: Path, fallback: Mapping[str, Any]) -> dict[str, Any]:
    """ModelConfig fields from a config.json, filling what the file leaves implicit as
    transformers does (num_key_value_heads = heads, head_dim = hidden / heads, the family's
    expert counts)."""
    raw = _read_json(path)
    fields: dict[str, Any] = {key: _int_field(raw, key, str(path), None) for key in _HF_REQUIRED}
    heads = fields["num_attention_heads"]
    fields["num_key_value_heads"] = _int_field(raw, "num_key_value_heads", str(path), heads)
    fields["head_dim"] = _int_field(raw, "head_dim", str(path), 0) or None  # None: hidden / heads
    known_len = int(fallback.get("max_position_embeddings") or 0) or None
    fields["max_position_embeddings"] = _int_field(raw, "max_position_embeddings", str(path), known_len)
    fields.update(_hf_experts(raw, path))
    fields.update(hf_moe_mla_fields(raw, path))
    if fields.get("kv_lora_rank"):  # MLA: heads are nope + rope wide, not hidden / heads
        fields["head_dim"] = fields["qk_nope_head_dim"] + fields["qk_rope_head_dim"]
    untied = str(raw.get("model_type", "")).startswith(_UNTIED_BY_DEFAULT)
    fields["tie_word_embeddings"] = _bool_field(raw, "tie_word_embeddings", str(path), not untied)
    fields["attention_bias"] = _bool_field(raw, "attention_bias", str(path), _is_qwen2(raw))
    if _name(fallback, "model", required=False) is None:
        fields["name"] = path.parent.name or path.stem
    if not fallback.get("display_name"):
        fields["display_name"] = str(raw.get("_name_or_path") or path.parent.name)
    return fields


# transformers' MixtralConfig defaults (configuration_mixtral.py): a Mixtral config.json that
# leaves the expert counts out still describes 8 experts with top-2 routing.
_MIXTRAL_DEFAULT_EXPERTS = {"num_local_experts": 8, "num_experts_per_tok": 2}


def _hf_experts(raw: Mapping[str, Any], path: Path) -> dict[str, int]:
    """num_local_experts and num_experts_per_tok; a partial MoE description outside the
    Mixtral family, whose defaults transformers fills, is refused rather than read as dense."""
    # transformers picks the config class by model_type; architectures only when it is absent
    model_type = raw.get("model_type")
    if model_type:
        is_mixtral = str(model_type).startswith("mixtral")
    else:
        is_mixtral = _is_family(raw, "mixtral", "Mixtral")
    defaults = _MIXTRAL_DEFAULT_EXPERTS if is_mixtral else {}
    experts = _int_field(raw, "num_local_experts", str(path), defaults.get("num_local_experts", 0))
    for key in EXPERT_COUNT_KEYS:  # DeepSeek's n_routed_experts, Qwen3-MoE's num_experts
        experts = experts or _int_field(raw, key, str(path))
    if not experts:
        refuse_partial_moe(raw, path)
        if raw.get("num_experts_per_tok") is not None:
            raise ConfigError(
                f"{path}: num_experts_per_tok is set but num_local_experts is missing; give the "
                "expert count (a dense model has neither field)"
            )
        return {"num_local_experts": 0, "num_experts_per_tok": 0}
    per_token = _int_field(raw, "num_experts_per_tok", str(path), defaults.get("num_experts_per_tok"))
    return {"num_local_experts": experts, "num_experts_per_tok": per_token}


def _read_json(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise ConfigError(
            f"model.hf_config_path: {path} is a directory; give the config.json file inside it"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"model.hf_config_path: no such file {path}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"model.hf_config_path: {path} is not UTF-8 text (byte {exc.start}); a Hugging Face "
            "config.json is UTF-8 JSON"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"model.hf_config_path: cannot read {path} as JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object, as in a Hugging Face config.json")
    return raw


def _is_qwen2(raw: Mapping[str, Any]) -> bool:
    """Qwen2 (and Qwen2.5) put a bias on q/k/v although config.json has no flag for it."""
    return _is_family(raw, "qwen2", "Qwen2")


def _is_family(raw: Mapping[str, Any], model_type: str, architecture: str) -> bool:
    architectures = raw.get("architectures") or []
    if not isinstance(architectures, list):
        architectures = [architectures]
    return str(raw.get("model_type", "")).startswith(model_type) or any(
        str(arch).startswith(architecture) for arch in architectures
    )


# ---- hardware ----------------------------------------------------------------------------------


def hardware_spec_from_config(cfg: HardwareConfig | DictConfig | Mapping[str, Any]) -> HardwareSpec:
    """Datasheet units (TFLOP/s, TB/s, GiB, GB/s, us) to SI units (FLOP/s, bytes/s, bytes, s)."""
    fields = _as_dict(cfg)
    name = _name(fields, "hardware")
    peaks = dict(fields.get("peak_tflops") or {})
    unknown = sorted(set(peaks) - set(COMPUTE_DTYPES))
    if unknown:
        raise ConfigError(
            f"hardware {name}: peak_tflops has unknown dtype(s) {', '.join(unknown)}; "
            f"valid: {', '.join(COMPUTE_DTYPES)}"
        )
    for dtype, tflops in peaks.items():
        if not _is_number(tflops) or not 0 < tflops < math.inf:
            raise ConfigError(
                f"hardware {name}: peak_tflops.{dtype} must be > 0 and finite, got {tflops!r} "
                "(omit the key if the chip has no such rate)"
            )
    if "bf16" not in peaks and "fp16" not in peaks:
        raise ConfigError(f"hardware {name}: peak_tflops needs a bf16 or fp16 rate")
    _check_hardware_ranges(fields, name)
    # Sustained clocks below boost: the compute peaks scale with the clock, HBM bandwidth does
    # not. Applied here so the cost model and the summary (MFU, power) see the same peaks.
    clock = float(fields.get("sustained_clock_ratio", 1.0))
    return HardwareSpec(
        name=name,
        peak_flops={dtype: float(tflops) * TFLOPS * clock for dtype, tflops in peaks.items()},
        vector_flops=float(fields["vector_tflops"]) * TFLOPS * clock,
        memory_bytes=float(fields["memory_gib"]) * GIB,
        memory_bandwidth=float(fields["memory_bandwidth_tbps"]) * TB_PER_S,
        interconnect=str(fields.get("interconnect") or ""),
        interconnect_bandwidth=float(fields.get("interconnect_bandwidth_gbps") or 0.0) * GB_PER_S,
        interconnect_latency_s=float(fields.get("interconnect_latency_us") or 0.0) * US,
        max_gpus_per_node=int(fields["max_gpus_per_node"]),
        nics_per_node=int(fields.get("nics_per_node") or 0),
        nic_bandwidth=float(fields.get("nic_bandwidth_gbps") or 0.0) * GB_PER_S,
        nic_latency_s=float(fields.get("nic_latency_us") or 0.0) * US,
        tdp_w=float(fields.get("tdp_w") or 0.0),
        idle_power_w=float(fields.get("idle_power_w") or 0.0),
        price_per_hour_usd=float(fields.get("price_per_hour_usd") or 0.0),
        boost_clock_mhz=float(fields.get("boost_clock_mhz") or 0.0),
        sustained_clock_ratio=clock,
        generation=str(fields.get("generation") or ""),
        display_name=str(fields.get("display_name") or name),
        source=str(fields.get("source") or ""),
        memory_source=str(fields.get("memory_source") or ""),
    )


# Every numeric key of a hardware entry: (lowest, whether the lowest itself is allowed, what it
# means). Zero is allowed where the schema's default 0 means "not given" (no cost or energy
# figures, no interconnect); a negative value, or one past an upper bound, would silently bend
# a result (a negative latency shortens every all-reduce, a negative price makes GPUs pay).
_HARDWARE_RANGES: dict[str, tuple[float, bool, str]] = {
    "vector_tflops": (0.0, False, "fp32 FLOP/s of the vector units"),
    "memory_gib": (0.0, False, "HBM capacity"),
    "memory_gb": (0.0, True, "datasheet capacity; 0: not given"),
    "memory_bandwidth_tbps": (0.0, False, "HBM bandwidth"),
    "interconnect_bandwidth_gbps": (0.0, True, "0: no GPU-to-GPU link (TP 1 only)"),
    "interconnect_latency_us": (0.0, True, "one small all-reduce hop"),
    "max_gpus_per_node": (1.0, True, "GPUs one node holds"),
    "nics_per_node": (0.0, True, "0: no network between nodes"),
    "nic_bandwidth_gbps": (0.0, True, "per NIC, one direction; 0: no network between nodes"),
    "nic_latency_us": (0.0, True, "one inter-node hop"),
    "boost_clock_mhz": (0.0, True, "0: not given"),
    "sustained_clock_ratio": (0.0, False, "a fraction of the boost clock, at most 1"),
    "tdp_w": (0.0, True, "0: unknown, no energy figures"),
    "idle_power_w": (0.0, True, "at most tdp_w"),
    "price_per_hour_usd": (0.0, True, "0: unknown, no cost figures"),
    "host_memory_gb": (0.0, True, "0: not given, no KV offloading"),
    "host_link_bandwidth_gbps": (0.0, True, "0: not given, no KV offloading"),
    "host_link_latency_us": (0.0, True, "fixed cost of one host copy job"),
    "host_link_per_copy_us": (0.0, True, "each memcpy of a host copy job"),
}
# No accelerator comes within orders of magnitude of these: a value past them is a unit
# mistake (bytes for GiB), and it would make the memory planner count blocks it cannot hold.
_HARDWARE_REQUIRED = ("vector_tflops", "memory_gib", "memory_bandwidth_tbps", "max_gpus_per_node")
_HARDWARE_MAXIMA = {"memory_gib": 2.0**16, "memory_gb": 2.0**16 * GIB / 1e9, "max_gpus_per_node": 1024}


def _check_hardware_ranges(fields: Mapping[str, Any], name: str) -> None:
    """Every numeric hardware key within its range, the relations between keys included."""
    for key, (lowest, allowed, meaning) in _HARDWARE_RANGES.items():
        value = fields.get(key)
        if value is None:
            if key in _HARDWARE_REQUIRED:
                raise ConfigError(f"hardware {name}: {key} must be given ({meaning})")
            continue
        bound = f">= {lowest:g}" if allowed else f"> {lowest:g}"
        if not _is_number(value) or not math.isfinite(value):
            raise ConfigError(f"hardware {name}: {key} must be a finite number {bound} ({meaning}), got {value!r}")
        if value < lowest or (value == lowest and not allowed):
            raise ConfigError(f"hardware {name}: {key} must be {bound} ({meaning}), got {value!r}")
        highest = _HARDWARE_MAXIMA.get(key)
        if highest is not None and value > highest:
            raise ConfigError(
                f"hardware {name}: {key}={value!r} is beyond any accelerator (at most {highest:g}); "
                "check the unit"
            )
    if not isinstance(fields["max_gpus_per_node"], int):
        raise ConfigError(
            f"hardware {name}: max_gpus_per_node must be a whole number, got {fields['max_gpus_per_node']!r}"
        )
    if float(fields.get("sustained_clock_ratio", 1.0)) > 1.0:
        raise ConfigError(
            f"hardware {name}: sustained_clock_ratio must be in (0, 1] (a fraction of the boost "
            f"clock), got {fields.get('sustained_clock_ratio')}"
        )
    tdp, idle = float(fields.get("tdp_w") or 0.0), float(fields.get("idle_power_w") or 0.0)
    if tdp > 0 and idle > tdp:  # tdp_w 0: power unknown, no energy figures (idle unused)
        raise ConfigError(
            f"hardware {name}: idle_power_w ({idle:g}) exceeds tdp_w ({tdp:g}); an idle GPU draws"
            " less than its power limit"
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ---- precision ---------------------------------------------------------------------------------


def precision_spec_from_config(
    cfg: PrecisionConfig | DictConfig | Mapping[str, Any], hardware: HardwareSpec
) -> PrecisionSpec:
    """Checks the dtypes exist and that `hardware` has a tensor-core rate for the GEMM dtype;
    resolves kv_cache_dtype "auto" (see `resolve_kv_cache_dtype`)."""
    fields = _as_dict(cfg)
    name = _name(fields, "precision")
    weight = _dtype(fields, "weight_dtype", WEIGHT_DTYPES, name)
    compute = _dtype(fields, "activation_dtype", COMPUTE_DTYPES, name)
    kv_cache = _dtype(fields, "kv_cache_dtype", KV_CACHE_DTYPES, name)
    group_size = int(fields.get("quantization_group_size") or 0)
    if group_size < 1:
        raise ConfigError(
            f"precision {name}: quantization_group_size must be >= 1, got {group_size}"
        )
    if DTYPE_BYTES[weight] > DTYPE_BYTES[compute]:
        raise ConfigError(
            f"precision {name}: weights in {weight} are wider than the {compute} GEMMs; store them "
            f"in {compute} (vLLM quantises bf16 checkpoints at load time)"
        )
    if not hardware.supports(compute):
        runnable = [p.name for p in REFERENCE_PRECISIONS if hardware.supports(p.activation_dtype)]
        gpu = hardware.display_name or hardware.name
        raise ConfigError(
            f"precision {name} runs its GEMMs in {compute}, but {gpu} has no {compute} tensor "
            f"cores; it supports {', '.join(hardware.supported_dtypes)} "
            f"(catalog precisions that run on it: {', '.join(runnable)})"
        )
    return PrecisionSpec(
        name=name,
        weight_dtype=weight,
        activation_dtype=compute,
        kv_cache_dtype=resolve_kv_cache_dtype(kv_cache, compute),
        quantization_group_size=group_size,
    )


def _dtype(fields: Mapping[str, Any], key: str, valid: tuple[str, ...], name: str) -> str:
    value = str(fields.get(key))
    if value not in valid:
        raise ConfigError(f"precision {name}: {key} {value!r} is not one of {', '.join(valid)}")
    return value


# ---- helpers -----------------------------------------------------------------------------------


def _as_dict(cfg: Any) -> dict[str, Any]:
    """A plain dict of the config's fields, whichever form the caller holds it in."""
    if isinstance(cfg, DictConfig):
        return dict(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return dataclasses.asdict(cfg)
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise TypeError(f"expected a config dataclass, DictConfig or mapping, got {type(cfg).__name__}")


def _name(fields: Mapping[str, Any], group: str, required: bool = True) -> str | None:
    """The entry's name; '???' is OmegaConf's MISSING marker."""
    name = fields.get("name")
    if name in (None, "", "???"):
        if required:
            raise ConfigError(f"the {group} config has no name")
        return None
    return str(name)
