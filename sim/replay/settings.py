"""The engine a real run used: read from its meta.json and the command line, then turned into
the simulator's config overrides.

meta.json (as the measurement set writes it) holds `model`, `precision`, `gpu`, a `scheduler`
block (`max_num_seqs`, `max_num_batched_tokens`, `max_model_len`, `enable_chunked_prefill`,
`long_prefill_token_threshold`, `async_scheduling`, optionally `enable_prefix_caching`), a
`cache` block (`block_size`, `num_gpu_blocks`, `gpu_memory_utilization`, `cache_dtype` (vLLM's
--kv-cache-dtype), optionally `enable_prefix_caching`) and `runs[]`, one entry per run with its `run` name and `n` requests.
Command-line values win over meta.json. A setting the simulator's schema does not have (for
example `scheduler.async_scheduling` in a version that does not model it) is reported, not
mapped.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from omegaconf import OmegaConf

from sim.config.scenarios import CONFIG_DIR
from sim.config.schema import SchedulerConfig
from sim.errors import ConfigError, TraceError

# EngineSettings field -> simulator scheduler key (sim.config.schema.SchedulerConfig).
SCHEDULER_KEYS = {
    "max_num_seqs": "max_num_seqs",
    "max_num_batched_tokens": "max_num_batched_tokens",
    "max_model_len": "max_model_len",
    "enable_chunked_prefill": "enable_chunked_prefill",
    "long_prefill_token_threshold": "long_prefill_token_threshold",
    "block_size": "block_size",
    "gpu_memory_utilization": "gpu_memory_utilization",
    "num_gpu_blocks": "num_gpu_blocks_override",
    "enable_prefix_caching": "enable_prefix_caching",
    "async_scheduling": "async_scheduling",
}

# vLLM's --kv-cache-dtype values -> the simulator's precision.kv_cache_dtype. "auto" is the
# model's dtype; the fp8 variants all store one byte per element (e4m3 and e5m2 differ in
# range only, and the simulator prices bytes and FLOPs).
KV_CACHE_DTYPES = {
    "auto": "auto", "bfloat16": "bf16", "bf16": "bf16", "float16": "bf16", "fp16": "bf16",
    "fp8": "fp8", "fp8_e4m3": "fp8", "fp8_e5m2": "fp8",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """What is known of the real engine; None: unknown (the simulator's default applies)."""

    model: str | None = None
    hardware: str | None = None
    precision: str | None = None
    tp: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    max_model_len: int | None = None
    enable_chunked_prefill: bool | None = None
    long_prefill_token_threshold: int | None = None
    block_size: int | None = None
    gpu_memory_utilization: float | None = None
    num_gpu_blocks: int | None = None
    enable_prefix_caching: bool | None = None
    async_scheduling: bool | None = None
    kv_cache_dtype: str | None = None  # vLLM's --kv-cache-dtype (cache_config.cache_dtype)
    sources: dict[str, str] = field(default_factory=dict)  # field -> where its value came from

    def merged(self, other: EngineSettings) -> EngineSettings:
        """These settings with every value that `other` knows replacing ours."""
        values, sources = {}, dict(self.sources)
        for f in dataclasses.fields(self):
            if f.name == "sources":
                continue
            theirs = getattr(other, f.name)
            values[f.name] = getattr(self, f.name) if theirs is None else theirs
            if theirs is not None:
                sources[f.name] = other.sources.get(f.name, "command line")
        return EngineSettings(**values, sources=sources)

    def known(self) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "sources" and getattr(self, f.name) is not None
        }


@dataclass(frozen=True, slots=True)
class Meta:
    path: Path
    settings: EngineSettings
    runs: dict[str, dict[str, Any]]  # run name -> its runs[] entry


def read_meta(path: Path) -> Meta:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TraceError(f"{path}: cannot open ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise TraceError(f"{path}: expected a JSON object with the engine settings")
    scheduler = _block(doc, "scheduler", path)
    cache = _block(doc, "cache", path)
    values: dict[str, Any] = {
        "model": _model_name(doc.get("model")),
        "hardware": hardware_name(doc["gpu"], path) if doc.get("gpu") else None,
        "precision": doc.get("precision"),
        "tp": doc.get("tensor_parallel_size", doc.get("tp")),
        "max_num_seqs": scheduler.get("max_num_seqs"),
        "max_num_batched_tokens": scheduler.get("max_num_batched_tokens"),
        "max_model_len": scheduler.get("max_model_len", doc.get("max_model_len")),
        "enable_chunked_prefill": scheduler.get("enable_chunked_prefill"),
        "long_prefill_token_threshold": scheduler.get("long_prefill_token_threshold"),
        "async_scheduling": scheduler.get("async_scheduling"),
        "enable_prefix_caching": cache.get("enable_prefix_caching", scheduler.get("enable_prefix_caching")),
        "block_size": cache.get("block_size"),
        "gpu_memory_utilization": cache.get("gpu_memory_utilization"),
        "num_gpu_blocks": cache.get("num_gpu_blocks"),
        "kv_cache_dtype": cache.get("cache_dtype", cache.get("kv_cache_dtype")),
    }
    settings = EngineSettings(
        **values, sources={k: "meta.json" for k, v in values.items() if v is not None}
    )
    runs_list = doc.get("runs") or []
    if not isinstance(runs_list, list):
        raise TraceError(f"{path}: runs must be a list of run entries")
    runs = {str(r["run"]): r for r in runs_list if isinstance(r, dict) and "run" in r}
    return Meta(path, settings, runs)


def _block(doc: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    block = doc.get(key) or {}
    if not isinstance(block, dict):
        raise TraceError(f"{path}: {key} must be an object of settings")
    return block


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _group_entries(group: str) -> dict[str, str]:
    """Option name -> its display_name for one config group."""
    entries = {}
    for yaml_path in sorted((CONFIG_DIR / group).glob("*.yaml")):
        node = OmegaConf.load(yaml_path)
        entries[yaml_path.stem] = str(node.get("display_name") or yaml_path.stem)
    return entries


def hardware_name(gpu: str, where: Path | str = "meta.json") -> str:
    """A GPU name as the driver reports it ("NVIDIA H200") -> a `hardware` option ("h200")."""
    key = _norm(str(gpu).removeprefix("NVIDIA ").removeprefix("AMD "))
    entries = _group_entries("hardware")
    exact = [name for name in entries if _norm(name) == key]
    if exact:
        return exact[0]
    close = [name for name, display in entries.items() if _norm(display.removeprefix("NVIDIA ").removeprefix("AMD ")).startswith(key)]
    if len(close) == 1:
        return close[0]
    raise ConfigError(
        f"{where}: gpu {gpu!r} matches {'several' if close else 'no'} hardware option(s)"
        f" ({', '.join(close or entries)}); pass --hardware NAME"
    )


def _model_name(model: Any) -> str | None:
    """A model option name, or a Hugging Face id matched to an option by its display name."""
    if not model:
        return None
    model = str(model)
    entries = _group_entries("model")
    if model in entries:
        return model
    key = _norm(model.split("/")[-1])
    matches = sorted((name for name, display in entries.items() if key.startswith(_norm(display))),
                     key=lambda name: -len(_norm(entries[name])))
    return matches[0] if matches else model  # unknown: Hydra's error lists the options


# What the KV block count vLLM profiles at start-up depends on: the weights and KV bytes per
# token (model, precision, TP, a drafter), the GPU, the block size, the memory fraction and the
# activation peak of the profiling run (the batch limits). A measured count describes the engine
# as it ran; once one of these differs it describes another engine.
BLOCK_COUNT_INPUTS = (
    "model", "hardware", "precision", "tp", "block_size", "gpu_memory_utilization",
    "max_num_seqs", "max_num_batched_tokens", "kv_cache_dtype",
)  # fmt: skip
BLOCK_COUNT_OVERRIDES = (
    "model", "hardware", "precision", "parallel", "speculative", "scheduler.block_size",
    "scheduler.gpu_memory_utilization", "scheduler.max_num_seqs", "scheduler.max_num_batched_tokens",
)  # fmt: skip


def drop_stale_block_count(
    measured: EngineSettings, asked: EngineSettings, override_keys: Iterable[str]
) -> tuple[EngineSettings, str | None]:
    """`asked` without meta.json's KV block count when the engine asked for is not the one that
    was measured (a setting of `BLOCK_COUNT_INPUTS` changed, or a Hydra override of one of
    `BLOCK_COUNT_OVERRIDES` was given), and a note that says so; unchanged otherwise. A count
    given on the command line is always kept."""
    if asked.num_gpu_blocks is None or asked.sources.get("num_gpu_blocks") != "meta.json":
        return asked, None
    changed = [name for name in BLOCK_COUNT_INPUTS if _same_as(name, asked) != _same_as(name, measured)]
    changed += sorted(
        {key for key in override_keys for group in BLOCK_COUNT_OVERRIDES if key == group or key.startswith(group + ".")}
    )
    if not changed:
        return asked, None
    sources = {k: v for k, v in asked.sources.items() if k != "num_gpu_blocks"}
    kept = dataclasses.replace(asked, num_gpu_blocks=None, sources=sources)
    note = (
        f"KV blocks: meta.json's {asked.num_gpu_blocks:,} were profiled by the engine as measured, and"
        f" {', '.join(changed)} {'differs' if len(changed) == 1 else 'differ'} here, so the cache is"
        " sized as vLLM would size it for this engine; pass --num-gpu-blocks N to fix the count"
    )
    return kept, note


def _same_as(name: str, settings: EngineSettings) -> Any:
    """A setting's value for comparison: vLLM's spellings of one KV cache dtype are one value."""
    value = getattr(settings, name)
    if name == "kv_cache_dtype" and value is not None:
        return KV_CACHE_DTYPES.get(str(value).lower(), value)
    return value


def scheduler_fields() -> set[str]:
    """The keys the simulator's scheduler schema has in this version."""
    return {f.name for f in dataclasses.fields(SchedulerConfig)}


def to_overrides(settings: EngineSettings) -> tuple[list[str], list[str]]:
    """Hydra overrides for the known settings, and a note for each one this simulator lacks."""
    overrides, notes = [], []
    for key, option in (("model", "model"), ("hardware", "hardware"), ("precision", "precision")):
        value = getattr(settings, key)
        if value is not None:
            overrides.append(f"{option}={value}")
    if settings.tp is not None:
        overrides.append(f"parallel.tp={int(settings.tp)}")
    if settings.kv_cache_dtype is not None:
        dtype = KV_CACHE_DTYPES.get(str(settings.kv_cache_dtype).lower())
        if dtype is None:
            raise ConfigError(
                f"kv_cache_dtype {settings.kv_cache_dtype!r} ({settings.sources.get('kv_cache_dtype', 'given')})"
                f" is not one the simulator prices; use one of {', '.join(KV_CACHE_DTYPES)}"
            )
        if dtype != "auto":
            overrides.append(f"precision.kv_cache_dtype={dtype}")
    have = scheduler_fields()
    for name, key in SCHEDULER_KEYS.items():
        value = getattr(settings, name)
        if value is None:
            continue
        if key not in have:
            notes.append(
                f"{name}={_text(value)} ({settings.sources.get(name, 'given')}): this simulator has no"
                f" scheduler.{key}, so it is not modelled"
            )
            continue
        overrides.append(f"scheduler.{key}={_text(value)}")
    return overrides, notes


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
