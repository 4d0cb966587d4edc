"""Start-up: what a short run and a sweep probe pay before and around the simulation.

    python benchmarks/bench_startup.py                  # this checkout
    python benchmarks/bench_startup.py --source DIR     # another checkout of the code (before/after)

Measures, each in fresh processes (`--repeat` times, the best shown):
- `python -m sim workload.num_requests=5` with the composition cache off (`SIM_COMPOSE_CACHE=0`:
  what every run paid before the cache), on its first run (the cache empty), and run again
  (the command composed before: the cache's case);
- `import sim.__main__` alone: the imports a run cannot avoid;
- the in-process probe path (`sim.sweep.probe`): composing the config, then one probe of
  5 requests, composed and run in the same process, as a capacity search or plan does.

Output must not depend on the cache: the runs' Parquet files are compared byte for byte.
Wall time depends on what else the machine runs; CPU time (user + system, of the child
processes) is the steadier figure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN = ["workload.num_requests=5", "output.print_summary=false", "output.progress=false"]
PROBE = """
import json, sys, time
t0 = time.perf_counter()
from sim.sweep.probe import Slo, compose_config, run_probe
t1 = time.perf_counter()
cfg = compose_config(["+scenario=llama8b_h100"])
t2 = time.perf_counter()
cfg = compose_config(["+scenario=llama8b_h100"])
t3 = time.perf_counter()
result = run_probe(cfg, 10.0, 0, 5, Slo(2.0, 0.1))
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "compose_s": t2 - t1, "compose_again_s": t3 - t2,
                  "probe_s": t4 - t3}))
"""


def _child(cmd: list[str], source: Path, env_extra: dict[str, str], cache: Path) -> tuple[float, float, str]:
    """Wall and CPU seconds of one child process, and its stdout."""
    env = {**os.environ, "PYTHONPATH": str(source), "XDG_CACHE_HOME": str(cache), **env_extra}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=source, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed: {proc.stderr.strip()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.glob("*.parquet")):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=REPO, help="checkout whose code runs")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    source = args.source.resolve()
    rows: dict[str, list[tuple[float, float]]] = {}
    digests: set[str] = set()
    manifest: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            cache = Path(tmp) / f"cache{i}"  # empty: first run of a command
            for label, env in (("cache off", {"SIM_COMPOSE_CACHE": "0"}), ("first run", {}), ("run again", {})):
                # One command line for all three (the run folder is part of it), then moved.
                cmd = [sys.executable, "-m", "sim", *RUN, f"hydra.run.dir={Path(tmp) / 'run'}"]
                wall, cpu, _ = _child(cmd, source, env, cache)
                out = Path(tmp) / f"run{i}-{label.replace(' ', '_')}"
                (Path(tmp) / "run").rename(out)
                rows.setdefault(f"python -m sim (5 requests), {label}", []).append((wall, cpu))
                digests.add(_digest(out))
                manifest = json.loads((out / "manifest.json").read_text())
            wall, cpu, _ = _child([sys.executable, "-c", "import sim.__main__"], source, {}, cache)
            rows.setdefault("import sim.__main__", []).append((wall, cpu))
            wall, cpu, stdout = _child([sys.executable, "-c", PROBE], source, {}, Path(tmp) / f"probe{i}")
            rows.setdefault("probe process (import, compose x2, 1 probe)", []).append((wall, cpu))
            for key, value in json.loads(stdout).items():
                rows.setdefault(f"  in-process {key[:-2]}", []).append((value, float("nan")))
    print(f"source              {source}")
    print(f"{'what':<48} {'wall s':>8} {'CPU s':>8}   (best of {args.repeat})")
    for label, values in rows.items():
        wall = min(w for w, _ in values)
        cpu = min(c for _, c in values)
        print(f"{label:<48} {wall:8.3f} {'' if cpu != cpu else f'{cpu:8.3f}':>8}")
    steps, events = manifest["engine_steps"], manifest["events_simulated"]
    sim_s = manifest["wall_time_s"]
    print(f"tiny run            {events:,} events, {steps:,} engine steps in {sim_s:.3f} s of simulate():"
          f" {events / sim_s:,.0f} events/s, {sim_s / steps * 1e6:,.0f} us per step")
    same = len(digests) == 1
    print(f"outputs             {'byte-identical' if same else 'DIFFER'} across the cache settings ({len(digests)} digest(s))")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
