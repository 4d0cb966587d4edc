"""Digests of every output file of a varied set of runs: a speed change must leave them as they were.

    python benchmarks/output_digest.py > before.txt      # on the code before the change
    python benchmarks/output_digest.py > after.txt       # after it
    diff before.txt after.txt                            # nothing: byte-identical outputs

    python benchmarks/output_digest.py --only pd,pp2     # some cases (names in CASES)

Each case runs in-process (`simulate`) into a fresh folder; every file under it (Parquet
tables, summary.json, manifest.json, those of compared setups in subfolders) is hashed with
sha256. Two things differ between identical runs: the manifest's wall time, left out of the
manifest's digest (which hashes the rest of the JSON), and the run folder, a temporary one,
which a summary names where it compares setups: it is hashed as `<out>`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

from harness import compose_scenario

from sim.config.build import build_run_spec, resolved_config
from sim.run import simulate

# name -> (scenario, overrides). Small request counts: the cases cover code paths, not volume.
CASES: dict[str, tuple[str, list[str]]] = {
    "70b": ("llama70b_h100", ["workload.num_requests=2000"]),
    "70b_nocache": ("llama70b_h100", ["workload.num_requests=2000", "scheduler.enable_prefix_caching=false"]),
    "70b_sync": ("llama70b_h100", ["workload.num_requests=1500", "scheduler.async_scheduling=false"]),
    "70b_sync_nocache": ("llama70b_h100", ["workload.num_requests=1000", "scheduler.async_scheduling=false",
                                           "scheduler.enable_prefix_caching=false"]),
    "8b": ("llama8b_h100", ["workload.num_requests=2000"]),
    "8b_replicas": ("llama8b_h100", ["workload.num_requests=3000", "parallel.replicas=3", "workload.rate=60"]),
    "sessions": ("chat_sessions_llama70b_h100", ["workload.num_requests=1500"]),
    "sessions_preempt": ("chat_sessions_llama70b_h100", ["workload.num_requests=800",
                                                         "scheduler.num_gpu_blocks_override=1200",
                                                         "scheduler.max_model_len=16384"]),
    "preempt": ("llama70b_h100", ["workload.num_requests=1000", "scheduler.num_gpu_blocks_override=700", "scheduler.max_model_len=8192"]),
    "preempt_nocache": ("llama70b_h100", ["workload.num_requests=1000", "scheduler.num_gpu_blocks_override=700",
                                          "scheduler.max_model_len=8192", "scheduler.enable_prefix_caching=false"]),
    "preempt_sync": ("llama70b_h100", ["workload.num_requests=600", "scheduler.num_gpu_blocks_override=600",
                                       "scheduler.max_model_len=8192", "scheduler.async_scheduling=false"]),
    "mooncake": ("mooncake_llama8b_h200", ["workload.num_requests=800"]),
    "specdec": ("llama70b_h100_specdec", ["workload.num_requests=400", "speculative.compare_rates=[]"]),
    "specdec_preempt": ("llama70b_h100_specdec", ["workload.num_requests=300", "speculative.compare_rates=[]",
                                                  "scheduler.num_gpu_blocks_override=500", "workload.rate=6",
                                                  "scheduler.max_model_len=8000"]),
    "pp2": ("llama405b_h100_pp2", ["workload.num_requests=300"]),
    "pd": ("pd_llama70b_h100", ["workload.num_requests=1500", "deployment.compare={}"]),
    "offload": ("mooncake_offload_llama8b_h200", ["workload.num_requests=400"]),
}


def digest_case(scenario: str, overrides: list[str]) -> tuple[list[str], dict]:
    cfg = compose_scenario(scenario, overrides)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        result = simulate(build_run_spec(cfg), Path(tmp), resolved_config(cfg))
        for path in sorted(Path(tmp).rglob("*")):
            if not path.is_file():
                continue
            data = path.read_bytes()
            if path.suffix == ".json":  # a comparison's summary names its folder: a temporary one
                data = data.replace(str(tmp).encode(), b"<out>")
            if path.name == "manifest.json":
                manifest = json.loads(data)
                manifest.pop("wall_time_s", None)
                data = json.dumps(manifest, sort_keys=True).encode()
            lines.append(f"{path.relative_to(tmp)} {hashlib.sha256(data).hexdigest()}")
    return lines, result.summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="comma-separated case names (default: all)")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(CASES)
    for name in names:
        scenario, overrides = CASES[name]
        start = time.process_time()
        lines, summary = digest_case(scenario, overrides)
        print(f"== {name}: {scenario} {' '.join(overrides)}")
        for line in lines:
            print(f"   {line}")
        requests = summary["requests"]
        print(f"{name}: {time.process_time() - start:.1f} s CPU, {requests.get('finished')} finished,"
              f" {requests.get('preemptions')} preemptions", file=sys.stderr)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
