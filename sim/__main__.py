"""`python -m sim [+scenario=NAME] [group=option ...] [key=value ...]`: one simulation run.

Hydra composes the config (configs/ plus the scenarios/ overlays), creates the run folder and
hands us the result; everything user-facing that goes wrong is a SimError, printed as one
message with a non-zero exit code.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sim.config.scenarios import CONFIG_DIR, register_scenarios
from sim.config.schema import register_schemas
from sim.errors import SimError

register_schemas()
register_scenarios()


@hydra.main(version_base=None, config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    from sim.config.build import build_run_spec, resolved_config
    from sim.run import simulate

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        spec = build_run_spec(cfg)
        result = simulate(spec, out_dir, resolved_config(cfg))
    except SimError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if not result.complete:
        print("interrupted: partial outputs written, manifest marked incomplete", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
