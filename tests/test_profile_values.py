"""A hardware profile with a value out of range is refused when it is loaded, naming it."""

from __future__ import annotations

import copy
import json
import math

import pytest

from sim.cost.calibrated import Profile
from sim.cost.profiles import PROFILE_DIR
from sim.errors import ConfigError

GOOD = json.loads((PROFILE_DIR / "h200.json").read_text())


@pytest.mark.parametrize(
    "path, value",
    [
        (("gemm", "bf16", "compute_efficiency"), 1.7),
        (("gemm", "bf16", "memory_efficiency"), 0.0),
        (("gemm", "bf16", "fixed_s"), -1e-6),
        (("gemm", "bf16", "tile_m"), 0),
        (("attention_decode", "half"), -3.0),
        (("attention_prefill", "ridge_p"), math.nan),
        (("elementwise", "memory_efficiency"), math.inf),
    ],
)
def test_out_of_range_values_are_refused_by_name(path, value):
    raw = copy.deepcopy(GOOD)
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError, match=r"\.".join(path)):
        Profile.from_dict(raw)


def test_the_shipped_profiles_load():
    for path in PROFILE_DIR.glob("*.json"):
        Profile.from_dict(json.loads(path.read_text()))


def test_a_missing_section_says_how_to_refit():
    raw = copy.deepcopy(GOOD)
    del raw["gemm"]
    with pytest.raises(ConfigError, match="python -m sim.calibrate.profile_fit"):
        Profile.from_dict(raw)
