"""Engine-time calibration: from vLLM's step log (when the shared measurements are there) and
from replayed client measurements (the copies in tests/data/vllm, always)."""

from __future__ import annotations

import json
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from sim.calibrate.engine import main as engine_main
from sim.calibrate.engine_replay import fit_from_replays
from sim.cost.engine_costs import EngineCosts
from sim.cost.engine_profiles import engine_profile_path, read_engine_profile
from sim.replay.replay import locate, replay
from sim.replay.settings import EngineSettings

DATA = Path(__file__).parent / "data" / "vllm"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "vllm"
STEPS_ARCHIVE = SHARED / "llama3_8b_bf16_h200_steps.tar.gz"


def test_the_committed_profile_is_what_the_fitter_gives(tmp_path):
    if not STEPS_ARCHIVE.is_file():
        pytest.skip("the shared vLLM measurements are not beside this checkout")
    with tarfile.open(STEPS_ARCHIVE) as tar:
        tar.extractall(tmp_path, filter="data")
    folder = next(p.parent for p in tmp_path.rglob("steps_*.csv"))
    out = tmp_path / "h200.json"
    assert engine_main([str(folder), "--hardware", "h200", "--out", str(out)]) == 0
    fitted = read_engine_profile(out)
    committed = read_engine_profile(engine_profile_path("h200"))
    for name, value in fitted.to_dict().items():
        if isinstance(value, float):
            assert value == pytest.approx(getattr(committed, name), rel=1e-6), name


def test_the_step_log_fit_refuses_a_folder_without_one(tmp_path, capsys):
    (tmp_path / "meta.json").write_text(json.dumps({"runs": []}))
    assert engine_main([str(tmp_path), "--hardware", "h200"]) == 2
    assert "no steps_*.csv" in capsys.readouterr().err


def test_a_replay_fit_recovers_from_a_bad_start(tmp_path):
    """Start from an engine whose CPU is 3x the H200's and with no runtime GPU time: the fit
    to pois_6 (client times only) must cut the TTFT/TPOT/ITL error to within that of the
    profile fitted on the step log."""
    source = locate(DATA, "pois_6")
    settings = EngineSettings(hardware="h200")
    good = read_engine_profile(engine_profile_path("h200"))
    bad = replace(
        good, gpu_per_decode_s=0.0,
        **{k: 3 * getattr(good, k) for k in ("schedule_s", "launch_full_s", "launch_piecewise_s",
                                             "launch_eager_s", "update_s")},
    )  # fmt: skip

    def replay_fn(src, profile, out_dir):
        overrides = ["scheduler.enable_prefix_caching=false", f"cost.engine_profile={profile}"]
        return replay(src, out_dir, cli_settings=settings, overrides=overrides).rows

    reference = fit_from_replays([source], good, replay_fn, max_evaluations=1).error_before
    fit = fit_from_replays([source], bad, replay_fn, max_evaluations=30)
    assert fit.error_before > 2 * reference
    assert fit.error_after < fit.error_before / 2
    assert fit.error_after < 1.5 * reference
    assert "fitted by replay" in fit.costs.source
    assert isinstance(fit.costs, EngineCosts)


def test_a_replay_fit_replays_the_client_limit_it_is_given(tmp_path, monkeypatch):
    import importlib

    replay_module = importlib.import_module("sim.replay.replay")  # the package exports a function of that name
    limits = []
    real = replay_module.replay

    def spy(*args, **kwargs):
        limits.append(kwargs.get("max_concurrency"))
        return real(*args, **kwargs)

    monkeypatch.setattr(replay_module, "replay", spy)
    out = tmp_path / "engine.json"
    assert engine_main(["--replay", str(DATA / "requests_b1.jsonl.gz"), "--hardware", "h200",
                        "--max-concurrency", "1", "--max-evaluations", "1", "--out", str(out)]) == 0  # fmt: skip
    assert limits and set(limits) == {1}
    assert json.loads(out.read_text())["engine"]["source"]
