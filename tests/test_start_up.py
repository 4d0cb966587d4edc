"""Failures before the run starts: Ctrl-C at any moment of start-up, and a run folder Hydra
could not create. Each is one line on stderr and an exit code, never a traceback."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO_ROOT

QUIET = ["output.print_summary=false", "output.progress=false"]


# Moments of start-up, found with `-X importtime` (a line per import, once it completes): in
# the middle of the heavy imports, once they are done, and while Hydra composes the config.
MOMENTS = [("hydra._internal", 0.0), ("numpy", 0.0), ("sim.errors", 0.0), ("sim.errors", 0.4)]


@pytest.mark.parametrize("module, then_s", MOMENTS)
def test_ctrl_c_at_any_moment_of_start_up_is_one_line_and_exit_130(tmp_path, module, then_s):
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "sim", *QUIET, "workload.rate=50",
         "workload.num_requests=1000000", f"hydra.run.dir={tmp_path}"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    seen = []
    for line in proc.stderr:  # wait until `module` has been imported
        seen.append(line)
        if line.rstrip().split("|")[-1].strip() == module:
            break
    time.sleep(then_s)
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    stderr = "".join(seen) + rest
    messages = [line for line in stderr.splitlines() if not line.startswith("import time:")]
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr, messages
    assert any("interrupted" in line for line in messages), messages


def test_a_run_folder_behind_a_file_is_one_error_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    for args in ([f"hydra.run.dir={blocker / 'run'}"], ["-m", f"hydra.sweep.dir={blocker / 'sweep'}"]):
        proc = subprocess.run(
            [sys.executable, "-m", "sim", *args, *QUIET, "workload.num_requests=5"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: cannot create the run folder")
        assert "is a file, not a folder" in lines[0]


def test_ctrl_c_between_the_config_and_the_run_loop_is_not_lost(tmp_path):
    """A Ctrl-C that lands after the last start-up check and before the run's own handler is in
    place (sent here from inside the run's set-up, so the moment does not depend on load)."""
    script = (
        "import os, signal, sys\n"
        "import sim.run\n"
        "enter = sim.run._StopOnSignal.__enter__\n"
        "def late_ctrl_c(self):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    return enter(self)\n"
        "sim.run._StopOnSignal.__enter__ = late_ctrl_c\n"
        "import sim.__main__ as entry\n"
        f"sys.argv = ['sim', *{QUIET!r}, 'workload.num_requests=20', 'hydra.run.dir={tmp_path}']\n"
        "entry.main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("interrupted")
