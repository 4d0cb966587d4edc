"""Hydra and OmegaConf stop at the config boundary: the model's packages never import them,
and what a run spec carries is typed specs, not schema objects or DictConfigs."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

from omegaconf import DictConfig

from conftest import REPO_ROOT, compose_config
from sim.config.build import build_run_spec

# Everything that runs the model: scheduler, KV cache, cost model, workload, metrics, pools,
# router, engine loop. The entry points (sim.__main__, sim.sweep, sim.plan, sim.replay,
# sim.calibrate) compose configs and may import Hydra; sim.config is the boundary itself.
MODEL_CODE = ["sim/core", "sim/cost", "sim/workload", "sim/metrics", "sim/deploy", "sim/kv_offload",
              "sim/router.py", "sim/simulation.py", "sim/clients.py", "sim/run.py"]  # fmt: skip
CONFIG_LIBRARIES = ("hydra", "omegaconf")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_the_model_code_never_imports_hydra_or_omegaconf():
    files = [f for entry in MODEL_CODE for f in sorted((REPO_ROOT / entry).rglob("*.py"))
             or [REPO_ROOT / entry]]  # fmt: skip
    assert len(files) > 50
    offenders = {
        str(f.relative_to(REPO_ROOT)): sorted(n for n in _imports(f) if n.split(".")[0] in CONFIG_LIBRARIES)
        for f in files
    }
    assert {f: n for f, n in offenders.items() if n} == {}


def test_a_run_spec_holds_no_schema_objects():
    spec = build_run_spec(compose_config(["workload.num_requests=5"]))
    schema_module = "sim.config.schema"

    def walk(value: object, where: str) -> None:
        assert not isinstance(value, DictConfig), where
        assert type(value).__module__ not in (schema_module, "sim.config.workload_schema"), where
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name), f"{where}.{f.name}")
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, f"{where}[{i}]")

    walk(spec, "spec")
    assert dataclasses.is_dataclass(spec.workload) and type(spec.workload).__name__ == "WorkloadSpec"
