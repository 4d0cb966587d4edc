"""What the benchmark scripts share: compose a scenario, time whole runs, print the figures."""

from __future__ import annotations

import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from sim.config.build import build_run_spec, resolved_config
from sim.config.scenarios import CONFIG_DIR, register_scenarios
from sim.config.schema import register_schemas
from sim.run import RunResult, simulate


@dataclass(frozen=True)
class Timing:
    walls_s: list[float]
    cpus_s: list[float]
    result: RunResult  # of the last run: the runs are identical (same seed)

    @property
    def wall_s(self) -> float:
        return min(self.walls_s)


def compose_scenario(scenario: str, overrides: list[str]):
    register_schemas()
    register_scenarios()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(
            config_name="config",
            overrides=[
                f"+scenario={scenario}",
                "output.print_summary=false",
                "output.progress=false",
                *overrides,
            ],
        )


def time_runs(cfg, repeat: int, time_build: bool = True) -> Timing:
    """Build and run the simulation `repeat` times, each into a fresh folder; `time_build`:
    the spec's build (the memory plan, the cost model's inputs) counts in the times."""
    walls, cpus = [], []
    built = None if time_build else build_run_spec(cfg)
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            start, start_cpu = time.perf_counter(), time.process_time()
            result = simulate(built or build_run_spec(cfg), Path(tmp), resolved_config(cfg))
            walls.append(time.perf_counter() - start)
            cpus.append(time.process_time() - start_cpu)
    return Timing(walls, cpus, result)


def print_figures(label: str, timing: Timing) -> float:
    """The figures every benchmark prints; returns peak RSS in MB."""
    manifest, summary = timing.result.manifest, timing.result.summary
    wall = timing.wall_s
    requests = summary["requests"]["arrived"]
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    walls = ", ".join(f"{w:.2f}" for w in timing.walls_s)
    print(f"scenario            {label} ({requests:,} requests)")
    print(f"wall time           {wall:.2f} s (best of {len(timing.walls_s)}: {walls})")
    print(f"CPU time            {min(timing.cpus_s):.2f} s (on a loaded machine wall time exceeds it)")
    print(f"engine steps        {manifest['engine_steps']:,}")
    print(f"events simulated    {manifest['events_simulated']:,}")
    print(f"requests/s (wall)   {requests / wall:,.0f}")
    cpu = min(timing.cpus_s)
    print(f"events/s (wall)     {manifest['events_simulated'] / wall:,.0f} ({manifest['events_simulated'] / cpu:,.0f} per CPU second)")
    print(f"us per step         {wall / max(manifest['engine_steps'], 1) * 1e6:,.1f} (wall, whole run / engine steps;"
          f" {cpu / max(manifest['engine_steps'], 1) * 1e6:,.1f} CPU)")
    print(f"simulated time      {summary['duration_s']:,.1f} s ({summary['duration_s'] / wall:,.0f}x real time)")
    print(f"peak RSS            {peak_rss_mb:,.0f} MB")
    return peak_rss_mb
