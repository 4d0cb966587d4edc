"""The shared command-line behaviour of analysis/ tools: an ordinary mistake (a wrong folder,
a missing table, a missing extra) is one `error: ...` line and exit code 2, not a traceback."""

from __future__ import annotations

import sys
from typing import Callable, Sequence

from analysis.runs import AnalysisError

EXTRAS = {"matplotlib": "plots", "hydra_plugins": "sweep", "joblib": "sweep", "ray": "ray"}


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    try:
        return main(argv)
    except AnalysisError as err:
        print(f"error: {err}", file=sys.stderr)
    except ModuleNotFoundError as err:
        root = (err.name or "").split(".")[0]
        extra = EXTRAS.get(root)
        if extra is None:
            raise
        print(f"error: this needs {root}, which is not installed: pip install -e '.[{extra}]'"
              f" (or pip install {root})", file=sys.stderr)
    return 2
