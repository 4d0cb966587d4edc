"""Trace-replay speed: the whole Azure conversation trace (19,366 requests) on llama70b_h100.

    python benchmarks/bench_replay.py
    python benchmarks/bench_replay.py --scenario mooncake_llama8b_h200 --repeat 1

Target (issue: real traffic): the full Azure conversation replay in under 10 s wall on one
core, every output written. Figures vary with the machine's load: run it a few times.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from sim.config.build import build_run_spec, resolved_config
from sim.config.scenarios import CONFIG_DIR, register_scenarios
from sim.config.schema import register_schemas
from sim.run import simulate

TARGET_S = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="azure_conv_llama70b_h100")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args()

    register_schemas()
    register_scenarios()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(
            config_name="config",
            overrides=[
                f"+scenario={args.scenario}",
                "output.print_summary=false",
                "output.progress=false",
                *args.overrides,
            ],
        )
    walls, cpus = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            start, start_cpu = time.perf_counter(), time.process_time()
            result = simulate(build_run_spec(cfg), Path(tmp), resolved_config(cfg))
            walls.append(time.perf_counter() - start)
            cpus.append(time.process_time() - start_cpu)
    wall = min(walls)
    manifest, summary = result.manifest, result.summary
    requests = summary["requests"]["arrived"]
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"scenario            {args.scenario} ({requests:,} requests replayed)")
    print(f"wall time           {wall:.2f} s (best of {args.repeat}: {', '.join(f'{w:.2f}' for w in walls)})")
    print(f"CPU time            {min(cpus):.2f} s (on a loaded machine wall time exceeds it)")
    print(f"engine steps        {manifest['engine_steps']:,}")
    print(f"events simulated    {manifest['events_simulated']:,}")
    print(f"requests/s (wall)   {requests / wall:,.0f}")
    print(f"events/s (wall)     {manifest['events_simulated'] / wall:,.0f}")
    print(f"simulated time      {summary['duration_s']:,.1f} s ({summary['duration_s'] / wall:,.0f}x real time)")
    print(f"peak RSS            {peak_rss_mb:,.0f} MB")
    print(f"target (<{TARGET_S:.0f} s): {'met' if wall < TARGET_S else 'NOT met'}")
    sys.exit(0)


if __name__ == "__main__":
    main()
