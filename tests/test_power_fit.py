"""The power fitter: it recovers known coefficients from synthetic samples, and the committed
H200 fit predicts the measured runs' mean power."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from sim.calibrate.power_fit import STATIC, Samples, StepWork, fit, fit_directories, fit_rows, token_steps
from conftest import REPO_ROOT

BOOST = 1980.0
SHARED = REPO_ROOT.parent / "shared" / "vllm"
STEP_RUNS = "llama3_8b_bf16_s1024_b8192"


def synthetic(static_w: float, j_per_flop: float, j_per_byte: float, alpha: float, seed: int = 0):
    """Steps of random work, a clock that drops with the load, and what a board following the
    model would report: instantaneous power on a 1 ms grid averaged over the second before
    each 200 ms sample (nvidia-smi's power.draw), the clock sampled instantaneously."""
    rng = np.random.default_rng(seed)
    n = 6000
    dur = rng.uniform(0.005, 0.06, n)
    gaps = np.where(rng.random(n) < 0.02, rng.uniform(0.5, 3.0, n), 0.0)  # idle stretches
    start = np.cumsum(np.r_[0.0, (dur + gaps)[:-1]]) + 5.0
    end = start + dur
    load = rng.random(n) ** 2
    flops = load * 7e14 * dur  # FLOP/s up to 700 T
    nbytes = (0.5 + 3.5 * rng.random(n)) * 1e12 * dur
    grid = np.arange(0.0, end[-1] + 6.0, 1e-3)
    k = np.searchsorted(end, grid, side="right")
    k = np.minimum(k, n - 1)
    busy = (grid >= start[k]) & (grid < end[k])
    f_rate = np.where(busy, flops[k] / dur[k], 0.0)
    b_rate = np.where(busy, nbytes[k] / dur[k], 0.0)
    # the clock wanders between 1300 MHz and boost, held for a second at a time, apart from the
    # load: what makes alpha identifiable (on the real board the power limit moves it)
    block = (grid // 1.0).astype(int)
    clock_grid = rng.uniform(1300.0, BOOST, block[-1] + 1)[block]
    inst = static_w + j_per_flop * (clock_grid / BOOST) ** (alpha - 1.0) * f_rate + j_per_byte * b_rate
    t = np.arange(2.0, grid[-1], 0.2)
    csum = np.r_[0.0, np.cumsum(inst)]
    i = np.searchsorted(grid, t)
    power = (csum[i] - csum[i - 1000]) / 1000 + rng.normal(0.0, 2.0, len(t))
    samples = Samples(t, power, clock_grid[i - 1])
    runs = [("a", 5.0, end[n // 2]), ("b", end[n // 2], end[-1])]
    return samples, runs, StepWork(start, end, flops, nbytes)


def test_the_fitter_recovers_known_coefficients():
    truth = dict(static_w=120.0, j_per_flop=1.1e-12, j_per_byte=1.0e-10, alpha=1.8)
    samples, runs, work = synthetic(**truth)
    rows = fit_rows(samples, runs, work, BOOST)
    assert set(rows.run) == {"a", "b", STATIC}
    result = fit(rows, BOOST)
    assert result["static_w"] == pytest.approx(120.0, rel=0.03)
    assert result["compute_j_per_flop"] == pytest.approx(1.1e-12, rel=0.03)
    assert result["memory_j_per_byte"] == pytest.approx(1.0e-10, rel=0.03)
    assert result["clock_exponent"] == pytest.approx(1.8, abs=0.15)
    for run in ("a", "b"):
        assert abs(result["held_out"][run]["mean_error_w"]) < 5.0


def test_the_fitter_is_not_fooled_by_a_different_truth():
    samples, runs, work = synthetic(static_w=80.0, j_per_flop=0.5e-12, j_per_byte=2.0e-10, alpha=2.5, seed=1)
    result = fit(fit_rows(samples, runs, work, BOOST), BOOST)
    assert result["static_w"] == pytest.approx(80.0, rel=0.05)
    assert result["memory_j_per_byte"] == pytest.approx(2.0e-10, rel=0.03)
    assert result["clock_exponent"] == pytest.approx(2.5, abs=0.25)


def extracted(tmp_path_factory, name: str) -> Path:
    """A run directory extracted from ../shared/vllm/<name>, or the test is skipped."""
    tarball = SHARED / name
    if not tarball.is_file():
        pytest.skip(f"{tarball} not present")
    out = tmp_path_factory.mktemp("vllm")
    with tarfile.open(tarball) as tar:
        tar.extractall(out, filter="data")
    found = [p.parent for p in out.rglob("meta.json")]
    if not found:
        pytest.skip(f"{tarball} holds no meta.json")
    return found[0]


class Counting:
    """Prices a batch at 1 FLOP per token and 1 byte per context token."""

    def step_cost(self, batch):
        from types import SimpleNamespace

        return SimpleNamespace(flops=float(batch.num_tokens), bytes=float(batch.decode_context_tokens))


def test_steps_are_rebuilt_from_token_times_only_when_requests_do_not_overlap(tmp_path):
    path = tmp_path / "requests_b1.jsonl"
    reqs = [{"send": 0.0, "prompt": 100, "output": 3, "tok": [0.05, 0.06, 0.07]},
            {"send": 0.08, "prompt": 10, "output": 2, "tok": [0.1, 0.11]}]
    path.write_text("\n".join(json.dumps(r) for r in reqs) + "\n")
    work = token_steps(Counting(), path, t_start=1000.0)
    assert list(work.flops) == [100, 1, 1, 10, 1]  # prefill, two decodes, prefill, decode
    assert list(work.bytes) == [0, 101, 102, 0, 11]
    assert work.start[0] == 1000.0 and work.start[3] == pytest.approx(1000.08)  # sent
    assert work.end[-1] == pytest.approx(1000.11)
    reqs[1]["send"] = 0.065  # sent before the first one finished: batches overlap
    path.write_text("\n".join(json.dumps(r) for r in reqs) + "\n")
    assert token_steps(Counting(), path, t_start=1000.0) is None


@pytest.fixture(scope="module")
def step_runs(tmp_path_factory) -> Path:
    """The measured runs with a step log."""
    return extracted(tmp_path_factory, "llama3_8b_bf16_h200_steps.tar.gz")


@pytest.fixture(scope="module")
def other_runs(tmp_path_factory) -> Path:
    """The measured runs without a step log (b1 among them)."""
    return extracted(tmp_path_factory, "llama3_8b_bf16_h200_runs.tar.gz")


def test_the_committed_h200_fit_predicts_each_measured_run(step_runs, other_runs):
    """Refit from the shared data: the committed coefficients are what it gives, and each run's
    mean power, predicted by a fit to the other runs only, is within 30 W of nvidia-smi's. The
    1-s samples scatter 14-20 W rms around the model, and the held-out means came out within
    13-25 W of the 555-693 W measured: 30 W is 5% of the lowest run's mean. Batch-1 decode
    (b1, never fitted) is held to the same bound."""
    result = fit_directories("h200", "llama3_8b", [step_runs], check_dirs=[other_runs])
    committed = json.loads((REPO_ROOT / "sim" / "data" / "power" / "h200.json").read_text())
    for key in ("static_w", "compute_j_per_flop", "memory_j_per_byte", "clock_exponent"):
        assert result[key] == pytest.approx(committed[key], rel=1e-6), key
    assert set(result["held_out"]) == {"pois_20", "off_1k_512", "pois_6"}
    for run, err in result["held_out"].items():
        assert abs(err["mean_error_w"]) < 30.0, (run, err)
        assert abs(result["fit"][run]["mean_error_w"]) < 15.0, (run, result["fit"][run])
        assert err["samples"] > 100
    assert abs(result["checked"]["b1"]["mean_error_w"]) < 30.0, result["checked"]


def test_bad_run_directories_get_one_error_line(tmp_path, capsys):
    from sim.calibrate.power_fit import main

    assert main(["--hardware", "h200", "--model", "llama3_8b", "--runs", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'smi.csv'}: missing")
    (tmp_path / "smi.csv").write_text("timestamp, power.draw [W], clocks.current.sm [MHz]\nyesterday, 1, 2\n")
    (tmp_path / "meta.json").write_text('{"runs": []}')
    (tmp_path / "steps_1.csv").write_text("seq\n")
    assert main(["--hardware", "h200", "--model", "llama3_8b", "--runs", str(tmp_path)]) == 2
    assert "steps_1.csv:1: missing column(s)" in capsys.readouterr().err
