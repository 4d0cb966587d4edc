"""Shared fixtures: compose configs in-process with Hydra's compose API."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hypothesis import settings
from hydra.core.global_hydra import GlobalHydra

from sim.config.scenarios import CONFIG_DIR, register_scenarios
from sim.config.schema import register_schemas

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"

register_schemas()
SCENARIOS = register_scenarios()

# The random-run tests draw the same cases on every run of the same code by default, so that a
# test run is repeatable. Hypothesis (6.131 on) also mixes in constants from the local modules
# loaded so far, so an edit to the code, another Hypothesis version or another selection of
# tests can draw other cases. `--hypothesis-profile explore` draws new cases on every run, to
# search for ones the fixed draw misses.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("repeatable")


def compose_config(overrides: list[str] | None = None):
    """Compose configs/config.yaml with overrides, as `python -m sim` would."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name="config", overrides=overrides or [])


@pytest.fixture
def compose_cfg():
    return compose_config
