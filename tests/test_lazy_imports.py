"""A run imports only what it uses: the calibration, replay and plan packages, SciPy,
matplotlib and pyarrow's dataset layer are for other commands."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO_ROOT

NOT_FOR_A_RUN = ("scipy", "matplotlib", "pandas", "pyarrow.dataset", "pyarrow.compute",
                 "sim.calibrate", "sim.replay", "sim.plan", "sim.sweep.collect")  # fmt: skip


def test_a_run_does_not_import_what_it_does_not_use(tmp_path):
    code = (
        "import sys, runpy\n"
        "sys.argv = ['sim', 'workload.num_requests=3', 'output.progress=false', "
        f"'hydra.run.dir={tmp_path}']\n"
        "try:\n    runpy.run_module('sim', run_name='__main__')\n"
        "finally:\n    print('MODULES', ' '.join(sorted(sys.modules)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = set(proc.stdout.rsplit("MODULES", 1)[1].split())
    assert "sim.run" in loaded
    unexpected = sorted(m for m in loaded if m.startswith(NOT_FOR_A_RUN))
    assert not unexpected, unexpected
