"""Hydra's config composition, cached by what the composed config is made of.

Composing the config (the defaults list, then every group file merged onto the typed schema)
is a third of a second here, and `python -m sim` composes twice: Hydra's `get_mode` composes
once only to read `hydra.mode`, and the run composes again. `install()` wraps Hydra's one
entry point for composition, `ConfigLoaderImpl.load_configuration` (hydra-core 1.3, pinned in
pyproject.toml), with a cache:

- the key is everything the result is made of: the config name, the overrides, the contents
  of every file on the config search path (configs/, Hydra's and its plugins' packages), the
  ConfigStore (the schema, the scenarios, the plugins' structured configs), the working
  directory, the job name, and the Hydra, OmegaConf and Python versions. A file edited, a
  plugin installed or an override changed is a new key, never a stale config;
- `get_mode` and the run share one composition: they differ only in that `get_mode` lets a
  missing group default pass (`skip_missing`), which changes nothing unless one is missing,
  so the ordinary composition is tried first and the lenient one only if that fails;
- the sweep-override check the caller asked for runs on every call, cached or not;
- entries live in memory and, pickled, in `~/.cache/sim/compose/` (`$XDG_CACHE_HOME`), so a
  command run again starts without composing. `SIM_COMPOSE_CACHE=0` turns the cache off.

Anything that goes wrong with the cache itself (an unreadable or full folder, a corrupt
entry) falls back to composing, silently: the cache only ever saves time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import pickle
import sys
import typing
from pathlib import Path
from typing import Any

ENV_SWITCH = "SIM_COMPOSE_CACHE"  # "0": compose every time
MAX_DISK_ENTRIES = 256  # oldest entries are removed beyond this
_FORMAT = b"sim-compose-cache-1"
_MODE_OVERRIDES = ("hydra.mode=RUN", "hydra.mode=MULTIRUN")

_schema_digests: dict[Any, bytes] = {}  # schema class -> digest of its fields (_schema_digest)
_original_load: Any = None  # Hydra's load_configuration, once install() wrapped it
_memory: dict[str, bytes] = {}  # key -> pickled entry, for this process


def install() -> None:
    """Route Hydra's composition through the cache (idempotent)."""
    global _original_load
    if _original_load is not None:
        return
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    _original_load = ConfigLoaderImpl.load_configuration
    ConfigLoaderImpl.load_configuration = _load_configuration


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1") != "0"


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "sim" / "compose"


def _load_configuration(
    loader: Any,
    config_name: str | None,
    overrides: list[str],
    run_mode: Any,
    from_shell: bool = True,
    validate_sweep_overrides: bool = True,
) -> Any:
    """Hydra's `load_configuration`, answered from the cache when it can be."""
    from hydra.types import RunMode

    if not enabled() or any("hydra.searchpath" in o for o in overrides):
        return _original_load(loader, config_name, overrides, run_mode, from_shell, validate_sweep_overrides)
    if validate_sweep_overrides:
        try:
            from hydra.core.override_parser.overrides_parser import OverridesParser

            parsed = OverridesParser.create().parse_overrides(overrides=list(overrides))
        except Exception:  # noqa: BLE001 - Hydra's own call raises the proper error
            return _original_load(loader, config_name, overrides, run_mode, from_shell, True)
        loader.validate_sweep_overrides_legal(overrides=parsed, run_mode=run_mode, from_shell=from_shell)
    # Hydra adds `hydra.mode=RUN` (or MULTIRUN) after `get_mode` found none: composed without
    # it and set afterwards, as the override would have set it, the two share an entry.
    mode_override = overrides[-1] if overrides and overrides[-1] in _MODE_OVERRIDES else None
    shared = overrides[:-1] if mode_override else overrides
    base = _key_base(loader, config_name, shared)

    def composed(mode: Any) -> Any:
        cfg = _lookup(base + mode.name.encode())
        if cfg is None:
            cfg = _store(base + mode.name.encode(), _original_load(loader, config_name, shared, mode, from_shell, False))
        if mode_override:
            cfg.hydra.mode = RunMode[mode_override.split("=", 1)[1]]
            cfg.hydra.overrides.hydra.append(mode_override)
        return cfg

    try:
        return composed(RunMode.RUN)
    except Exception:
        if run_mode != RunMode.MULTIRUN:
            raise
    # A multirun (or get_mode) may leave a group default missing; compose as Hydra would.
    return composed(RunMode.MULTIRUN)


def _lookup(key_bytes: bytes) -> Any:
    key = hashlib.sha256(key_bytes).hexdigest()
    blob = _memory.get(key)
    if blob is None:
        try:
            blob = (cache_dir() / f"{key}.pkl").read_bytes()
        except OSError:
            return None
    try:
        env, cfg = pickle.loads(blob)
    except Exception:  # noqa: BLE001 - a corrupt or foreign entry: compose instead
        return None
    if any(os.environ.get(name) != value for name, value in env.items()):
        return None  # hydra.job.env_copy copies variables that have changed since
    _memory[key] = blob
    return cfg


def _store(key_bytes: bytes, cfg: Any) -> Any:
    """Keep `cfg` (before anything resolves or changes it) and return it."""
    key = hashlib.sha256(key_bytes).hexdigest()
    try:
        env = {name: os.environ.get(name) for name in cfg.hydra.job.env_copy}
        blob = pickle.dumps((env, cfg), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - a config that cannot be pickled is simply not cached
        return cfg
    _memory[key] = blob
    _write_disk(key, blob)
    return cfg


def _write_disk(key: str, blob: bytes) -> None:
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{os.getpid()}.tmp"
        tmp.write_bytes(blob)
        tmp.replace(folder / f"{key}.pkl")
        entries = sorted(folder.glob("*.pkl"), key=lambda p: p.stat().st_mtime)
        for old in entries[:-MAX_DISK_ENTRIES]:
            old.unlink(missing_ok=True)
    except OSError:
        pass


def _key_base(loader: Any, config_name: str | None, overrides: list[str]) -> bytes:
    """Everything the composed config depends on, as bytes to hash."""
    import hydra
    import omegaconf
    from hydra.core.config_store import ConfigStore
    from hydra.core.utils import JobRuntime

    h = hashlib.sha256(_FORMAT)
    try:
        job_name = JobRuntime().get("name")
    except Exception:  # noqa: BLE001 - not set outside a Hydra app
        job_name = None
    for part in (hydra.__version__, omegaconf.__version__, sys.version, os.getcwd(), job_name,
                 config_name, list(overrides)):  # fmt: skip
        h.update(repr(part).encode() + b"\0")
    for element in loader.config_search_path.get_path():
        h.update(f"{element.provider}={element.path}\0".encode())
        _hash_source(h, element.path)
    _hash_store(h, ConfigStore.instance().repo)
    return h.digest()


def _hash_store(h: Any, repo: dict, prefix: str = "") -> None:
    """Every ConfigStore entry, one at a time: a pickle of the whole tree would also encode
    which objects happen to be shared between entries, which changes as Hydra uses them.
    A structured entry's pickle names its dataclasses without their fields, so the fields of
    every dataclass it is built from are hashed too: a schema field added by a new version
    of the code is a new key, never a stale config without it."""
    from omegaconf import DictConfig, OmegaConf

    for name in sorted(repo):
        node = repo[name]
        if isinstance(node, dict):
            _hash_store(h, node, f"{prefix}{name}/")
        else:
            h.update(f"{prefix}{name}\0".encode() + pickle.dumps(node, protocol=4))
            content = getattr(node, "node", None)
            if isinstance(content, DictConfig):
                h.update(_schema_digest(OmegaConf.get_type(content)))


def _schema_digest(cls: Any) -> bytes:
    """`_hash_schema` of `cls`, once per process (classes do not change while it runs)."""
    digest = _schema_digests.get(cls)
    if digest is None:
        h = hashlib.sha256()
        _hash_schema(h, cls, set())
        digest = _schema_digests[cls] = h.digest()
    return digest


def _hash_schema(h: Any, cls: Any, seen: set) -> None:
    """The name, type and default of every field of dataclass `cls` and of the dataclasses
    its fields' types name."""
    if not dataclasses.is_dataclass(cls) or cls in seen:
        return
    seen.add(cls)
    h.update(f"{cls.__module__}.{cls.__qualname__}\0".encode())
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an unresolvable annotation: its text stands for it
        hints = {}
    for f in dataclasses.fields(cls):
        hint = hints.get(f.name, f.type)
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "<required>"
        h.update(f"{f.name}:{hint!r}={default}\0".encode())
        stack = [hint]
        while stack:
            t = stack.pop()
            _hash_schema(h, t, seen)
            stack.extend(typing.get_args(t))


def _hash_source(h: Any, path: str | None) -> None:
    """The names and contents of every YAML file of a folder or `pkg://` search-path source."""
    if not path:
        return
    if path.startswith("file://"):
        folder = Path(path[len("file://") :])
    elif "://" not in path:  # Hydra reads a path without a scheme as a folder
        folder = Path(path)
    elif path.startswith("pkg://"):
        try:
            spec = importlib.util.find_spec(path[len("pkg://") :].replace("/", "."))
        except (ImportError, ValueError):
            spec = None
        locations = list(spec.submodule_search_locations or []) if spec else []
        if not locations:
            return
        folder = Path(locations[0])
    else:  # structured://: the ConfigStore, hashed as a whole
        return
    if not folder.is_dir():
        return
    for file in sorted(folder.rglob("*")):
        if file.is_file() and file.suffix in (".yaml", ".yml"):
            h.update(str(file.relative_to(folder)).encode() + b"\0" + file.read_bytes() + b"\0")
