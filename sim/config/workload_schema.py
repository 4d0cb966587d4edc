"""The `workload` group at the config boundary: its Hydra schema, and the typed spec built from it.

The schema classes are derived from the frozen records of `sim.workload.spec` (same fields,
types and defaults, but mutable and with lists, as Hydra's ConfigStore needs), so the spec
stays the one place where a workload field is declared and documented. Past
`workload_spec()` nothing sees a DictConfig or a schema object.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, List, Mapping, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sim.errors import ConfigError
from sim.workload.spec import LengthSpec, RatePoint, TraceColumns, WorkloadSpec


def _schema_of(spec: type, name: str, nested: Mapping[type, type]) -> type:
    """A mutable dataclass with the fields of the frozen `spec`: nested specs become their
    schema classes, `tuple[X, ...]` a `List` of X's schema, a required field `MISSING`."""
    hints = typing.get_type_hints(spec)
    fields = []
    for f in dataclasses.fields(spec):
        hint = hints[f.name]
        if typing.get_origin(hint) is tuple:
            hint = List[nested[typing.get_args(hint)[0]]]  # type: ignore[valid-type]
        elif hint in nested:
            hint = nested[hint]
        if f.default is dataclasses.MISSING:
            fields.append((f.name, hint, dataclasses.field(default=MISSING)))
        elif isinstance(f.default, (tuple, *nested)):  # a mutable default: built per instance
            factory = lambda d=f.default: _recast(d, _SCHEMA_OF, list)  # noqa: E731
            fields.append((f.name, hint, dataclasses.field(default_factory=factory)))
        else:
            fields.append((f.name, hint, dataclasses.field(default=f.default)))
    schema = dataclasses.make_dataclass(name, fields)
    schema.__doc__ = f"Hydra schema of `{spec.__name__}` (same fields).\n\n{spec.__doc__}"
    schema.__module__ = __name__
    return schema


def _recast(value: Any, classes: Mapping[type, type], sequence: type) -> Any:
    """`value` with every record of a type in `classes` rebuilt as its counterpart, and every
    list or tuple as `sequence`."""
    cls = classes.get(type(value))
    if cls is not None:
        return cls(**{f.name: _recast(getattr(value, f.name), classes, sequence)
                      for f in dataclasses.fields(value)})  # fmt: skip
    if isinstance(value, (list, tuple)):
        return sequence(_recast(v, classes, sequence) for v in value)
    return value


_SCHEMA_OF: dict[type, type] = {}  # spec record -> its schema class, filled below
LengthConfig = _schema_of(LengthSpec, "LengthConfig", {})
RatePointConfig = _schema_of(RatePoint, "RatePointConfig", {})
TraceColumnsConfig = _schema_of(TraceColumns, "TraceColumnsConfig", {})
_SCHEMA_OF.update({LengthSpec: LengthConfig, RatePoint: RatePointConfig, TraceColumns: TraceColumnsConfig})
WorkloadConfig = _schema_of(WorkloadSpec, "WorkloadConfig", _SCHEMA_OF)
_SCHEMA_OF[WorkloadSpec] = WorkloadConfig
_SPEC_OF = {schema: spec for spec, schema in _SCHEMA_OF.items()}


def workload_spec(cfg: WorkloadSpec | DictConfig | Mapping[str, Any]) -> WorkloadSpec:
    """The typed spec of a `workload` config: a Hydra DictConfig, a plain dict, or a spec built
    in code (whose field types are checked too).

    Merging onto the structured schema first means a misspelt key or a wrong type is caught
    here, with the key's name, rather than silently ignored. The check costs tens of
    milliseconds, and a spec built in code is checked again wherever it enters (build_workload,
    build_requests), so a config checked before (the same values, the same types) is answered
    from a memo. The spec is frozen all the way down, so the memo hands out the one object.
    """
    key = _memo_key(cfg)
    checked = _CHECKED.get(key) if key is not None else None
    if checked is not None:
        return checked
    try:
        source = _recast(cfg, _SCHEMA_OF, list) if isinstance(cfg, WorkloadSpec) else cfg
        merged = OmegaConf.merge(OmegaConf.structured(WorkloadConfig), source)
        spec = _recast(OmegaConf.to_object(merged), _SPEC_OF, tuple)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"workload config: {exc}") from exc
    if len(_CHECKED) >= _MAX_CHECKED:
        _CHECKED.clear()
    _CHECKED[repr(spec)] = spec  # a spec that passed passes again unchanged
    if key is not None:
        _CHECKED[key] = spec
    return spec


def _memo_key(cfg: object) -> Optional[str]:
    """The memo's key: the spec's repr, or a DictConfig's resolved values (None when they do
    not resolve: the check itself then says why)."""
    if type(cfg) is WorkloadSpec:
        return repr(cfg)
    if isinstance(cfg, DictConfig):
        try:
            return "DictConfig" + repr(OmegaConf.to_container(cfg, resolve=True))
        except OmegaConfBaseException:
            return None
    return None


_CHECKED: dict[str, WorkloadSpec] = {}  # memo key -> the checked spec
_MAX_CHECKED = 256
