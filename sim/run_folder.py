"""The run folder: create it and hold it for one run, and check before Hydra creates it.

A run locks its folder with flock on the folder's own descriptor, so a second run into it is
refused at once (no lock file is left behind, and the kernel drops the lock when the process
ends, however it ends). `RunFolderCheck` is a Hydra callback (`hydra.callbacks` in
configs/config.yaml) that checks, before Hydra creates the run or sweep folder, that it can:
a file in the way or an unwritable parent is then one `error:` line, not Hydra's traceback.
"""

from __future__ import annotations

import fcntl
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from hydra.experimental.callback import Callback

from sim.errors import OutputError


@contextmanager
def locked_run_folder(out_dir: Path) -> Iterator[None]:
    """Create `out_dir` and hold an exclusive lock on the folder itself (flock on its file
    descriptor: no lock file is left behind, and the kernel releases the lock when the
    process ends, however it ends)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(out_dir, os.O_RDONLY)
    except OSError as exc:
        raise OutputError(
            f"cannot use the run folder {out_dir}: {exc.strerror or exc}"
            f"{f' ({exc.filename})' if exc.filename else ''}; choose a writable folder"
            " (hydra.run.dir=...)"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(
                f"the run folder {out_dir} is in use by another run; give each run its own"
                " folder (hydra.run.dir=...)"
            ) from None
        yield
    finally:
        os.close(fd)


class RunFolderCheck(Callback):
    """Hydra callback (`hydra.callbacks` in configs/config.yaml): before Hydra creates the run
    (or sweep) folder, check that it can, so a file in the way or a read-only or unwritable
    parent is one `error:` line and exit code 2 rather than Hydra's traceback. After a sweep,
    list the jobs that failed (each recorded its error in its folder) and exit 2 if any did."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        _exit_unless_creatable(str(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        _exit_unless_creatable(str(config.hydra.sweep.dir), "hydra.sweep.dir")

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from sim.sweep.collect import failed_jobs

        sweep_dir = Path(str(config.hydra.sweep.dir))
        failures = failed_jobs(sweep_dir)
        if failures:
            names = ", ".join(job.name for job, _ in failures)
            print(
                f"error: {len(failures)} job(s) of the sweep failed ({names}); the others ran:"
                f" python -m sim.sweep.collect {sweep_dir} lists every job",
                file=sys.stderr,
            )
            sys.exit(2)


def _exit_unless_creatable(folder: str, key: str) -> None:
    path = Path(folder).absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problem = None
    if not existing.is_dir():
        problem = f"{existing} is a file, not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        read_only = " (read-only file system)" if _read_only(existing) else ""
        problem = f"{existing} is not writable{read_only}"
    if problem:
        print(f"error: cannot create the run folder {path}: {problem}; set {key}=... to a"
              " writable folder", file=sys.stderr)
        sys.exit(2)


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False
