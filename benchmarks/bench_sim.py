"""Simulator speed: wall time, simulated requests/s and events/s, peak memory.

    python benchmarks/bench_sim.py                      # llama70b_h100, 10,000 requests
    python benchmarks/bench_sim.py --requests 50000 --scenario llama8b_h100

Target (issue: speed): 10,000 requests of llama70b_h100 in under 5 s wall on one core, with
peak resident memory under 1 GB. Figures vary with the machine's load: run it a few times.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="llama70b_h100")
    parser.add_argument("--requests", type=int, default=10_000)
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
                f"workload.num_requests={args.requests}",
                "output.print_summary=false",
                "output.progress=false",
                *args.overrides,
            ],
        )
    walls = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            spec = build_run_spec(cfg)
            result = simulate(spec, Path(tmp), resolved_config(cfg))
            walls.append(time.perf_counter() - start)
    wall = min(walls)
    manifest = result.manifest
    summary = result.summary
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"scenario            {args.scenario} ({args.requests:,} requests)")
    print(f"wall time           {wall:.2f} s (best of {args.repeat}: {', '.join(f'{w:.2f}' for w in walls)})")
    print(f"engine steps        {manifest['engine_steps']:,}")
    print(f"events simulated    {manifest['events_simulated']:,}")
    print(f"requests/s (wall)   {args.requests / wall:,.0f}")
    print(f"events/s (wall)     {manifest['events_simulated'] / wall:,.0f}")
    print(f"simulated time      {summary['duration_s']:,.1f} s")
    print(f"peak RSS            {peak_rss_mb:,.0f} MB")
    ok = wall < 5.0 and peak_rss_mb < 1024
    print(f"target (<5 s, <1 GB): {'met' if ok else 'NOT met'}")
    sys.exit(0)


if __name__ == "__main__":
    main()
