"""Command-line overrides checked against the typed schema before Hydra composes them.

Hydra lets `+key=value` add a key the schema does not have (`+scheduler.max_num_seq=128`
silently runs with 256), and its message for a misspelt key without `+` tells users to add one.
So every override is checked here first, with or without `+`, and a key the schema lacks is
refused with the closest name. Two rewrites make common spellings work:

- a bare number for a token length (`workload.prompt_tokens=1000`) is a fixed length, as
  benchmarks state ISL/OSL: `workload.prompt_tokens.kind=fixed workload.prompt_tokens.value=1000`;
- `model.hf_config_path=...` takes the model's name, display name and parameter count from the
  file (unless `model.name` / `model.display_name` / `model.published_params_b` are given too),
  instead of keeping those of the default model group.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException

from sim.config.scenarios import CONFIG_DIR
from sim.config.schema import SimConfig
from sim.errors import ConfigError
from sim.config.workload_schema import LengthConfig

# Keys Hydra itself owns, and the `scenario` group that sim/config/scenarios.py registers.
_FREE_ROOTS = ("hydra",)
_EXTRA_GROUPS = ("scenario",)
_HF_DERIVED = ("model.name", "model.display_name", "model.published_params_b")


def config_groups() -> list[str]:
    """The config groups a `group=option` override may pick."""
    return sorted([p.name for p in CONFIG_DIR.iterdir() if p.is_dir()] + list(_EXTRA_GROUPS))


def check_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides, validated against the schema and rewritten as described above.

    Raises ConfigError (one line, naming the key and the closest valid name)."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as exc:
        raise ConfigError(f"cannot parse override: {' '.join(str(exc).split())}") from None
    keys = {o.key_or_group for o in parsed}
    out: list[str] = []
    for line, override in zip(overrides, parsed):
        key = override.key_or_group
        if override.is_delete() or key.split(".")[0].split("/")[0] in _FREE_ROOTS:
            out.append(line)
            continue
        field_type = _check_key(key, override)
        if field_type is LengthConfig and _is_number(override):
            value = line.split("=", 1)[1]  # as typed: a sweep (1000,2000) stays a sweep
            out += [f"{key}.kind=fixed", f"{key}.value={value}"]
            continue
        out.append(line)
        if key == "model.hf_config_path" and override.value() is not None:
            out += [f"{k}={_EMPTY[k]}" for k in _HF_DERIVED if k not in keys]
    return out


_EMPTY = {"model.name": "''", "model.display_name": "''", "model.published_params_b": "null"}


def _check_key(key: str, override: Override) -> Any:
    """The schema type at `key` (None where anything goes below a dict or list)."""
    parts = key.split(".")
    groups = config_groups()
    if len(parts) == 1 and "/" not in key and key in groups and isinstance(override.value(), str):
        return None  # a group choice: Hydra lists the options if this one does not exist
    if "/" in key:  # a nested group path, e.g. hydra/launcher; only hydra's are known
        raise ConfigError(f"unknown config group {key!r}; groups: {', '.join(groups)}")
    node: Any = SimConfig
    for depth, part in enumerate(parts):
        names = _field_names(node)
        if names is None:
            return None
        if part not in names:
            where = ".".join(parts[:depth])
            candidates = sorted(set(names + (groups if depth == 0 else [])) - set(_FREE_ROOTS))
            raise ConfigError(_unknown(key, where, part, candidates))
        node = _field_type(node, part)
    return node


def _unknown(key: str, where: str, part: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(part, candidates, n=1, cutoff=0.6)
    prefix = f"{where}." if where else ""
    hint = f"; did you mean {prefix}{close[0]}?" if close else ""
    scope = f"{where} has" if where else "the config has"
    return (
        f"unknown key {key!r}: {scope} no {part!r}{hint} (with or without '+', only keys of the"
        f" typed schema, sim/config/schema.py, are accepted; known: {', '.join(candidates)})"
    )


def _field_names(node: Any) -> list[str] | None:
    if dataclasses.is_dataclass(node):
        return [f.name for f in dataclasses.fields(node) if f.name != "defaults"]
    return None  # a dict, list or scalar: no fixed keys below


def _field_type(node: Any, name: str) -> Any:
    hint = typing.get_type_hints(node)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union and len(args) == 1:
        hint = args[0]  # Optional[X]
    return hint if dataclasses.is_dataclass(hint) else None if typing.get_origin(hint) else hint


def _is_number(override: Override) -> bool:
    if override.is_sweep_override():
        values = list(override.sweep_iterator())
    else:
        values = [override.value()]
    return bool(values) and all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[int]]:
    """The Hydra overrides in a `python -m sim` command line and their positions (the other
    arguments are Hydra's flags: -m, --cfg job, -sc install=bash, ...)."""
    from hydra._internal.utils import get_args_parser

    args, _unknown_args = get_args_parser().parse_known_args(list(argv))
    overrides = list(args.overrides or [])
    positions, start = [], 0
    for item in overrides:
        index = list(argv).index(item, start)
        positions.append(index)
        start = index + 1
    return overrides, positions


def rewrite_argv(argv: Sequence[str]) -> list[str]:
    """`argv` with its overrides checked and rewritten (flags untouched)."""
    overrides, positions = split_argv(argv)
    if not overrides:
        return list(argv)
    rewritten = check_overrides(overrides)
    out = [a for i, a in enumerate(argv) if i not in set(positions)]
    insert_at = positions[0] - sum(1 for p in positions if p < positions[0])
    return out[:insert_at] + rewritten + out[insert_at:]
