"""Measure the local GPU with PyTorch and write a hardware profile for the cost model.

    python -m sim.calibrate --hardware h100_sxm [--out sim/data/profiles/h100_sxm.json]
    python -m sim.calibrate engine DIR [DIR ...] --hardware h200   (engine time, no GPU needed:
                                                                     sim.calibrate.engine)

Needs PyTorch with a CUDA GPU (`pip install -e '.[calibrate]'` adds PyTorch) and the measuring
scripts of the repository's `calibration/` folder. It runs the per-operator step sweep and the
GEMM sweep (a few minutes), then fits the profile (`sim.calibrate.profile_fit`). With TP > 1
measurements wanted, run calibration/measure_allreduce.py under torchrun yourself and pass its
CSV to `python -m sim.calibrate.profile_fit --allreduce`.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

from sim.calibrate.profile_fit import main as fit_main
from sim.config.scenarios import REPO_ROOT

SCRIPTS_DIR = REPO_ROOT / "calibration"


def gpu_problem() -> str:
    """Why this machine cannot be calibrated, or "" when it can."""
    if importlib.util.find_spec("torch") is None:
        return "PyTorch is not installed (pip install -e '.[calibrate]')"
    import torch

    if not torch.cuda.is_available():
        return "PyTorch sees no CUDA GPU on this machine"
    if not (SCRIPTS_DIR / "measure_steps.py").is_file():
        return f"the measuring scripts are missing ({SCRIPTS_DIR}); run from a checkout of the repository"
    return ""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "engine":
        from sim.calibrate.engine import main as engine_main

        return engine_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hardware", required=True, help="catalog name of this GPU, e.g. h100_sxm")
    p.add_argument("--out", type=Path, help="profile path (default sim/data/profiles/<hardware>.json)")
    p.add_argument("--data-dir", type=Path, help="keep the raw CSVs here (default: a temp dir)")
    p.add_argument("--budget-s", type=float, default=300.0, help="time allowed for the step sweep")
    args = p.parse_args(argv)
    problem = gpu_problem()
    if problem:
        print(f"error: cannot calibrate: {problem}", file=sys.stderr)
        return 2
    out = args.out or REPO_ROOT / "sim" / "data" / "profiles" / f"{args.hardware}.json"
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data_dir or Path(tmp)
        data.mkdir(parents=True, exist_ok=True)
        prefix = args.hardware
        steps = [sys.executable, str(SCRIPTS_DIR / "measure_steps.py"), "--out-dir", str(data),
                 "--prefix", prefix, "--models", "llama3_8b", "--budget-s", str(args.budget_s)]
        gemm = [sys.executable, str(SCRIPTS_DIR / "measure_gemm.py"), "--out-dir", str(data), "--prefix", prefix]
        for command in (steps, gemm):
            if subprocess.run(command, cwd=REPO_ROOT).returncode != 0:
                print(f"error: measurement failed: {' '.join(command)}", file=sys.stderr)
                return 2
        return fit_main(
            ["--hardware", args.hardware, "--ops", str(data / f"{prefix}_ops.csv"),
             "--gemm-sweep", str(data / f"{prefix}_gemm.csv"), "--out", str(out)]
        )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
