"""The composition cache answers what Hydra would compose, and never a stale config; the
lighter path for sweep probes composes the same config; the workload check's memo is exact."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import OmegaConf

from conftest import REPO_ROOT
from sim.config import compose_cache
from sim.sweep.probe import compose_config, compose_variant
from sim.workload import LengthSpec, WorkloadSpec
from sim.config.workload_schema import workload_spec


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty cache in a temporary folder; counts the compositions Hydra really does."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(compose_cache.ENV_SWITCH, raising=False)
    compose_cache.install()
    monkeypatch.setattr(compose_cache, "_memory", {})
    calls = []
    original = compose_cache._original_load

    def counted(*args, **kwargs):
        calls.append(args[3])  # the run mode
        return original(*args, **kwargs)

    monkeypatch.setattr(compose_cache, "_original_load", counted)
    return calls


def _compose_dir(config_dir, overrides=()):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base=None):
            return compose(config_name="config", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize(
    "overrides",
    [[], ["+scenario=llama70b_h100"], ["+scenario=mooncake_llama8b_h200", "hardware=h100_sxm", "seed=4"]],
)
def test_cached_composition_is_what_hydra_composes(fresh_cache, monkeypatch, overrides):
    first = compose_config(overrides)
    again = compose_config(overrides)
    assert len(fresh_cache) == 1  # the second came from the cache
    monkeypatch.setenv(compose_cache.ENV_SWITCH, "0")
    plain = compose_config(overrides)
    assert len(fresh_cache) == 2
    assert OmegaConf.to_yaml(first) == OmegaConf.to_yaml(again) == OmegaConf.to_yaml(plain)


def test_an_edited_config_file_is_a_new_composition(fresh_cache, tmp_path):
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (config_dir / "config.yaml").write_text("rate: 1\n")
    assert _compose_dir(config_dir).rate == 1
    assert _compose_dir(config_dir).rate == 1
    (config_dir / "config.yaml").write_text("rate: 2\n")
    assert _compose_dir(config_dir).rate == 2
    assert _compose_dir(config_dir, ["rate=3"]).rate == 3
    assert len(fresh_cache) == 3


def test_a_field_added_to_a_nested_schema_is_a_new_key():
    """A ConfigStore entry's pickle names its dataclasses without their fields; a new field
    in a nested schema (a new version of the code) must not be answered from the old entry."""
    import hashlib

    @dataclasses.dataclass
    class Inner:
        a: int = 1

    @dataclasses.dataclass
    class Outer:
        inner: Inner = dataclasses.field(default_factory=Inner)

    def key(outer_cls) -> bytes:
        h = hashlib.sha256()
        compose_cache._hash_schema(h, outer_cls, set())
        return h.digest()

    before = key(Outer)

    @dataclasses.dataclass
    class Inner:  # noqa: F811 - the same class, one field more
        a: int = 1
        b: int | None = None

    @dataclasses.dataclass
    class Outer:  # noqa: F811
        inner: Inner = dataclasses.field(default_factory=Inner)

    assert key(Outer) != before
    # The real schema: the workload group's fields are part of the key.
    from sim.config.schema import SimConfig

    h = hashlib.sha256()
    compose_cache._hash_schema(h, SimConfig, seen := set())
    from sim.config.workload_schema import WorkloadConfig

    assert WorkloadConfig in seen


def test_get_mode_and_the_run_share_one_composition(fresh_cache):
    """`python -m sim` asks twice: get_mode (lenient, no sweep check), then the run with
    `hydra.mode=RUN` added. Hydra composes once."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base=None):
            loader = GlobalHydra.instance().config_loader()
            probe = loader.load_configuration("config", ["seed=5"], RunMode.MULTIRUN, True, False)
            run = loader.load_configuration("config", ["seed=5", "hydra.mode=RUN"], RunMode.RUN, True, True)
            with pytest.raises(Exception, match="Ambiguous value"):  # the sweep check still runs
                loader.load_configuration("config", ["seed=5,6"], RunMode.RUN, True, True)
    finally:
        GlobalHydra.instance().clear()
    assert fresh_cache == [RunMode.RUN]
    assert probe.hydra.mode is None and run.hydra.mode == RunMode.RUN
    assert list(run.hydra.overrides.hydra) == ["hydra.mode=RUN"]
    assert run.seed == probe.seed == 5


def test_a_corrupt_entry_is_composed_again(fresh_cache):
    compose_config(["seed=7"])
    compose_cache._memory.clear()
    for entry in compose_cache.cache_dir().glob("*.pkl"):
        entry.write_bytes(b"not a pickle")
    assert compose_config(["seed=7"]).seed == 7
    assert len(fresh_cache) == 2


def test_cached_run_writes_the_same_bytes(tmp_path):
    """Two `python -m sim` processes, the second from the cache the first filled: the same
    Parquet bytes and the same .hydra records as a run with the cache off."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    args = ["workload.num_requests=20", "output.print_summary=false", "output.progress=false"]
    folders = []
    for i, switch in enumerate(("1", "1", "0")):
        folder = tmp_path / f"run{i}"
        subprocess.run(
            [sys.executable, "-m", "sim", *args, f"hydra.run.dir={tmp_path / 'run'}"],
            cwd=REPO_ROOT, env={**env, compose_cache.ENV_SWITCH: switch}, check=True, capture_output=True,
        )
        (tmp_path / "run").rename(folder)
        folders.append(folder)
    assert len(list((tmp_path / "cache" / "sim" / "compose").glob("*.pkl"))) == 1
    for name in ("requests.parquet", "steps.parquet", "timeline.parquet", ".hydra/config.yaml", ".hydra/hydra.yaml"):
        contents = {(folder / name).read_bytes() for folder in folders}
        assert len(contents) == 1, name


@pytest.mark.parametrize(
    "overrides",
    [
        ["scheduler.max_num_seqs=64", "workload.rate=7.5", "seed=3"],
        ["+scheduler.max_waiting_requests=5", "workload.prompt_tokens.kind=fixed", "workload.prompt_tokens.value=100"],
        ["hardware=h200", "workload.rate=3"],  # a group choice: composed in full
    ],
)
def test_compose_variant_composes_what_compose_config_does(overrides):
    base_overrides = ["+scenario=llama8b_h100"]
    base = compose_config(base_overrides)
    variant = compose_variant(base, base_overrides, overrides)
    assert OmegaConf.to_yaml(variant) == OmegaConf.to_yaml(compose_config([*base_overrides, *overrides]))
    assert OmegaConf.to_yaml(base) == OmegaConf.to_yaml(compose_config(base_overrides))  # untouched


def test_compose_variant_refuses_as_hydra_does():
    base = compose_config([])
    with pytest.raises(Exception, match="workload.rate=abc"):
        compose_variant(base, [], ["workload.rate=abc"])


def test_workload_check_memo_is_exact():
    cfg = WorkloadSpec(name="w", arrival="poisson", rate=2, num_requests=10,
                       prompt_tokens=LengthSpec(kind="fixed", value=10))  # fmt: skip
    first = workload_spec(cfg)
    assert first.rate == 2.0 and isinstance(first.rate, float)  # converted by the check
    again = workload_spec(cfg)
    assert again == first and isinstance(again.rate, float)
    changed = workload_spec(dataclasses.replace(cfg, rate=3))
    assert changed.rate == 3.0
    with pytest.raises(Exception, match="workload config"):
        workload_spec(dataclasses.replace(cfg, rate="fast"))
