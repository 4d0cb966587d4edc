"""`python -m sim [+scenario=NAME] [group=option ...] [key=value ...]`: one simulation run.

Hydra composes the config (configs/ plus the scenarios/ overlays), creates the run folder and
hands us the result. Exit codes: 0 done; 1 a config Hydra could not compose (unknown option,
misspelt key, wrong type: Hydra's own message, which lists the options); 2 a SimError (bad
value, model that does not fit, malformed trace), printed as one `error: ...` line (in a
sweep, the job's failure is recorded in its folder and the sweep goes on; it exits 2 at the
end if any job failed); 130 / 143
interrupted by SIGINT / SIGTERM, with partial outputs and the manifest marked incomplete.
Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import signal
import sys


def _interrupted_at_start_up(signum: int, frame: object) -> None:
    print("interrupted during start-up: nothing was written", file=sys.stderr)
    sys.exit(130)


# Ctrl-C while the heavy imports below load: a one-line message, not an import traceback.
# Python's own handler is put back once they are loaded (at the bottom of this file).
if __name__ == "__main__":
    signal.signal(signal.SIGINT, _interrupted_at_start_up)

from pathlib import Path  # noqa: E402

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from sim.config.scenarios import CONFIG_DIR, register_scenarios  # noqa: E402
from sim.config.schema import register_schemas  # noqa: E402
from sim.errors import SimError  # noqa: E402

register_schemas()
try:
    register_scenarios()
except SimError as err:  # a scenario file that is not valid YAML
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base=None, config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    from sim.config.build import build_run_spec, resolved_config
    from sim.run import simulate
    from sim.sweep.collect import record_failure

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        spec = build_run_spec(cfg)
        result = simulate(spec, out_dir, resolved_config(cfg))
    except SimError as err:
        print(f"error: {err}", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN:  # the sweep goes on to its next job
            record_failure(out_dir, str(err), exit_code=2)
            return
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C outside the simulation loop (set-up, or writing outputs)
        print("interrupted: outputs not written or incomplete", file=sys.stderr)
        sys.exit(130)
    if not result.complete:
        print(
            f"interrupted by {result.interrupted_by}: partial outputs written to {out_dir},"
            " manifest marked incomplete",
            file=sys.stderr,
        )
        sys.exit(143 if result.interrupted_by == "SIGTERM" else 130)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        main()
    except KeyboardInterrupt:  # while Hydra composes the config, before the run starts
        print("interrupted during start-up: nothing was written", file=sys.stderr)
        sys.exit(130)
