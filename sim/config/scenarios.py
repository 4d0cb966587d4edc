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
    cs = ConfigStore.instance()
    names = []
    for path in scenario_files(directory):
        try:
            node = OmegaConf.load(path)
        except yaml.YAMLError as exc:
            problem = " ".join(str(exc).split())
            raise ConfigError(f"scenario file {path} is not valid YAML: {problem}") from None
        if not isinstance(node, DictConfig):
            raise ConfigError(f"scenario file {path} must hold a mapping of config keys")
        cs.store(group="scenario", name=path.stem, node=node, package="_global_")
        names.append(path.stem)
    return names
