"""`sim [+scenario=NAME] [group=option ...] [key=value ...]` (or `python -m sim`): one run.

Before Hydra sees them, the overrides are checked against the typed schema
(`sim.config.overrides`): an unknown key, with or without `+`, is refused with the closest
name, a bare number for a token length is a fixed length, and a model read from config.json
takes its name from the file. A single run is filed under `outputs/<scenario>/<time>/` when
nothing is overridden and `outputs/<scenario>+<overrides>/<time>/` otherwise, and the printed
table says what was overridden.

Exit codes: 0 done; 1 a config Hydra could not compose (unknown option, wrong type: Hydra's own
message, which lists the options); 2 a SimError (unknown key, bad value, model that does not
fit, malformed trace), printed as one `error: ...` line (in a sweep, the job's failure is
recorded in its folder and the sweep goes on; it exits 2 at the end if any job failed); 130 /
143 interrupted by SIGINT /
SIGTERM, with partial outputs and the manifest marked incomplete. Any other exception is a bug
and keeps its traceback.
"""

from __future__ import annotations

import signal
import sys


def _interrupted_at_start_up(signum: int, frame: object) -> None:
    print("interrupted during start-up: nothing was written", file=sys.stderr)
    sys.exit(130)


_start_up_interrupted = False  # Ctrl-C while Hydra composes: noted, acted on between steps


def _note_start_up_interrupt(signum: int, frame: object) -> None:
    # Raising inside Hydra's or OmegaConf's code can leave their state broken and surface as
    # an unrelated config error; the interrupt is noted and honoured at the next safe point.
    global _start_up_interrupted
    _start_up_interrupted = True


def _exit_if_interrupted() -> None:
    if _start_up_interrupted:
        print("interrupted during start-up: nothing was written", file=sys.stderr)
        sys.exit(130)


# Ctrl-C while the heavy imports below load: a one-line message, not an import traceback.
# Python's own handler is put back once they are loaded (in main()).
if __name__ == "__main__":
    signal.signal(signal.SIGINT, _interrupted_at_start_up)

import dataclasses  # noqa: E402
import hashlib  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Sequence  # noqa: E402

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from sim.config import compose_cache  # noqa: E402
from sim.config.overrides import check_overrides, split_argv  # noqa: E402
from sim.config.scenarios import CONFIG_DIR, register_scenarios  # noqa: E402
from sim.config.schema import register_schemas  # noqa: E402
from sim.errors import SimError  # noqa: E402

# Composition through the cache: here, for `python -m sim`, and in a sweep's worker processes,
# which import this module to run their jobs and compose each job's config there.
compose_cache.install()

# Overrides that change how a run is reported, not what ran: left out of the folder name.
_NOT_NAMING = ("output.", "hydra.", "hydra/", "scenario_name=", "question=")
_MAX_NAME = 96
_typed_overrides: list[str] | None = None  # as the user typed them, before the rewrites


def run_changes(overrides: Sequence[str]) -> list[str]:
    """The overrides that change what runs, as typed (the scenario choice excluded)."""
    return [
        o.lstrip("+")
        for o in overrides
        if not o.lstrip("+~").startswith(_NOT_NAMING) and not o.lstrip("+").startswith("scenario=")
    ]


def run_folder_name(overrides: Sequence[str]) -> str:
    """`<scenario>` or `<scenario>+<key=value,...>`: the folder says what ran."""
    scenario = next(
        (o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("scenario=")), "default"
    )
    changes = run_changes(overrides)
    if not changes:
        return scenario
    name = f"{scenario}+{','.join(changes)}"
    name = "".join(c if c.isalnum() or c in "+=,._-" else "_" for c in name)
    if len(name) > _MAX_NAME:  # long command lines: a readable head and a hash of the whole
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[: _MAX_NAME - 9]}~{digest}"
    return name


def _prepare_argv(argv: list[str]) -> list[str]:
    """Check and rewrite the overrides; choose the run folder of a single run."""
    if any(flag in argv for flag in ("-sc", "--shell-completion", "--help", "-h", "--hydra-help")):
        return argv
    global _typed_overrides
    overrides, positions = split_argv(argv)
    rewritten = check_overrides(overrides)
    flags = [a for i, a in enumerate(argv) if i not in set(positions)]
    multirun = "-m" in flags or "--multirun" in flags
    # A multirun's jobs are headed by their own overrides (Hydra's, one value per sweep).
    _typed_overrides = None if multirun else [o for o in overrides if not o.startswith("hydra.")]
    if not multirun and not any(o.startswith("hydra.run.dir=") for o in overrides):
        rewritten.append(
            f"hydra.run.dir='outputs/{run_folder_name(overrides)}/${{now:%Y-%m-%d_%H-%M-%S}}'"
        )
    return flags + rewritten


@hydra.main(version_base=None, config_path=str(CONFIG_DIR), config_name="config")
def _main(cfg: DictConfig) -> None:
    from sim.config.build import build_run_spec
    from sim.metrics.report import format_summary, request_figures
    from sim.run import simulate

    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    _exit_if_interrupted()
    try:
        spec = build_run_spec(cfg)
        # Past Hydra's code: a Ctrl-C raises again (caught below) until the run's own handler
        # takes over and stops it between events. Put back first, then check the note, so that
        # no interrupt falls between the two and is lost.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _exit_if_interrupted()
        quiet = dataclasses.replace(spec, print_summary=False)  # printed below, with more
        result = simulate(quiet, out_dir, _resolved(cfg, spec))
    except SimError as err:
        print(f"error: {err}", file=sys.stderr)
        if hydra_cfg.mode == RunMode.MULTIRUN:  # the sweep goes on to its next job
            from sim.sweep.collect import record_failure

            record_failure(out_dir, str(err), exit_code=2)
            return
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C outside the simulation loop (set-up, or writing outputs)
        print("interrupted: outputs not written or incomplete", file=sys.stderr)
        sys.exit(130)
    if spec.print_summary:
        typed = _typed_overrides if _typed_overrides is not None else hydra_cfg.overrides.task
        changes = run_changes(list(typed))
        extra = request_figures(out_dir / "requests.parquet", result.summary)
        print(format_summary(result.summary, overrides=changes, extra=extra))
        print(f"\noutputs in {out_dir}")
    if cfg.compare.layouts and result.complete:  # the scenario's layouts side by side
        from sim.compare import run_comparison

        print(run_comparison(cfg, out_dir))
    if not result.complete:
        print(
            f"interrupted by {result.interrupted_by}: partial outputs written to {out_dir},"
            " manifest marked incomplete",
            file=sys.stderr,
        )
        sys.exit(143 if result.interrupted_by == "SIGTERM" else 130)


def _resolved(cfg: DictConfig, spec) -> dict:
    """The resolved config for the manifest; a model read from config.json is described as
    read (its name and shapes), not by the fields of the model group it replaced."""
    from sim.config.build import resolved_config

    resolved = resolved_config(cfg)
    model = resolved.get("model") or {}
    if model.get("hf_config_path"):
        for key in list(model):
            if hasattr(spec.model, key):
                model[key] = getattr(spec.model, key)
        model["source"] = f"read from {model['hf_config_path']}"
    return resolved


def main() -> None:
    """Entry point of `python -m sim` and of the `sim` console script."""
    signal.signal(signal.SIGINT, _note_start_up_interrupt)
    try:
        register_schemas()
        try:
            register_scenarios()
            sys.argv = [sys.argv[0], *_prepare_argv(sys.argv[1:])]
        except SimError as err:  # an unknown key, or a scenario file that is not valid YAML
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        _exit_if_interrupted()
        _main()
    except KeyboardInterrupt:  # while Hydra composes the config, before the run starts
        print("interrupted during start-up: nothing was written", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
