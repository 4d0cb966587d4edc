"""Every config composes; schema violations are errors that name the key."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from sim.config.scenarios import CONFIG_DIR
from conftest import SCENARIOS, compose_config

GROUPS = ("model", "hardware", "precision", "parallel", "scheduler", "workload")


def test_the_four_foundation_scenarios_exist():
    assert {"llama70b_h100", "llama8b_h100", "llama70b_h200", "llama70b_h100_fp8"} <= set(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_scenario_composes_and_says_what_it_answers(scenario):
    cfg = compose_config([f"+scenario={scenario}"])
    assert cfg.scenario_name == scenario
    assert cfg.question
    text = (CONFIG_DIR.parent / "scenarios" / f"{scenario}.yaml").read_text()
    assert text.startswith("# @package _global_\n# Question:") or "# Question:" in text.split("\n")[1]


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_of_every_group_composes(group):
    for path in sorted((CONFIG_DIR / group).glob("*.yaml")):
        cfg = compose_config([f"{group}={path.stem}"])
        assert cfg[group] is not None


def test_scenario_values_reach_the_config():
    cfg = compose_config(["+scenario=llama70b_h100"])
    assert cfg.model.name == "llama3_70b"
    assert cfg.hardware.name == "h100_sxm"
    assert cfg.parallel.tp == 4
    assert cfg.precision.name == "bf16"
    cfg = compose_config(["+scenario=llama70b_h100_fp8"])
    assert cfg.precision.name == "fp8" and cfg.parallel.tp == 2


def test_misspelt_key_on_the_command_line_names_it():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["scheduler.max_num_seq=64"])
    assert "max_num_seq" in str(err.value) or "max_num_seq" in str(err.value.__cause__)


def test_wrong_type_on_the_command_line_names_the_key():
    with pytest.raises((ConfigCompositionException, ValidationError)) as err:
        compose_config(["scheduler.max_num_seqs=lots"])
    text = str(err.value) + str(err.value.__cause__)
    assert "max_num_seqs" in text


def test_misspelt_key_in_a_yaml_names_it(tmp_path):
    (tmp_path / "workload").mkdir()
    (tmp_path / "workload" / "misspelt.yaml").write_text(
        "name: bad\narival: poisson\nrate: 1.0\nnum_requests: 5\n"
    )
    with pytest.raises((ConfigCompositionException, ConfigKeyError)) as err:
        compose_config([f"hydra.searchpath=[file://{tmp_path}]", "workload=misspelt"])
    assert "arival" in str(err.value) + str(err.value.__cause__)
