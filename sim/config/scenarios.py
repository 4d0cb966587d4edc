"""Makes the top-level `scenarios/` folder Hydra's `scenario` group (`+scenario=NAME`).

Each scenario file is an experiment overlay (`# @package _global_`, `override /group: option`
in its defaults). Storing the files in the ConfigStore keeps the folder at the top of the
repository, where users look for it, while Hydra lists and validates them like any group.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from sim.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "configs"
SCENARIO_DIR = REPO_ROOT / "scenarios"


def scenario_files(directory: Path = SCENARIO_DIR) -> list[Path]:
    return sorted(directory.glob("*.yaml"))


def register_scenarios(directory: Path = SCENARIO_DIR) -> list[str]:
    """Store every scenario file in the `scenario` group. Called again with files unchanged
    (a sweep or a plan composes many configs), it stores nothing: parsing and storing them
    costs a tenth of a second each time."""
    global _last_registered
    files = scenario_files(directory)
    stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    cs = ConfigStore.instance()
    if _last_registered == (directory, stamp) and "scenario" in cs.repo:
        return [p.stem for p in files]
    names = []
    for path in files:
        try:
            node = OmegaConf.load(path)
        except yaml.YAMLError as exc:
            problem = " ".join(str(exc).split())
            raise ConfigError(f"scenario file {path} is not valid YAML: {problem}") from None
        if not isinstance(node, DictConfig):
            raise ConfigError(f"scenario file {path} must hold a mapping of config keys")
        cs.store(group="scenario", name=path.stem, node=node, package="_global_")
        names.append(path.stem)
    _last_registered = (directory, stamp)
    return names


# The folder stored last and its files' (path, mtime, size): another folder's files may have
# replaced some of the entries since, so only a repeat of the last registration is skipped.
_last_registered: tuple[Path, tuple] | None = None
