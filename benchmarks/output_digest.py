"""Digests of every output file of a varied set of runs: a speed change must leave them as they were.

    python benchmarks/output_digest.py > before.txt      # on the code before the change
    python benchmarks/output_digest.py > after.txt       # after it
    diff before.txt after.txt                            # nothing: byte-identical outputs

    python benchmarks/output_digest.py --only pd,pp2     # some cases (names in CASES)
    python benchmarks/output_digest.py --set waiting     # runs whose waiting queues grow deep

Each case runs in-process (`simulate`) into a fresh folder; every file under it (Parquet
tables, summary.json, manifest.json, those of compared setups in subfolders) is hashed with
sha256. What differs between identical runs is left out: every JSON key about wall time, the
Python and package versions, and the run folder, a temporary one, which a summary names where
it compares setups (hashed as `<out>`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
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

# Each case: a scenario and overrides that make its waiting queue grow past the part of the
# queue kept as objects (sim.core.waiting_queue), so requests are stored compactly, taken out
# at the head, scheduled, preempted, and, with a horizon, reported unfinished from the queue.
WAITING_CASES: dict[str, tuple[str, list[str]]] = {
    # Overload with an admission limit: most arrivals refused, the queue held at 1,500.
    "overload_bounded": ("llama8b_h100", [
        "workload.num_requests=20000", "workload.rate=20000", "scheduler.max_waiting_requests=1500",
        "horizon_s=3.0",
    ]),
    # Overload without a limit: 4,000 requests at once, every one served in the end.
    "overload_drain": ("llama8b_h100", ["workload.num_requests=4000", "workload.rate=2000"]),
    # Without a limit, stopped at a horizon: the queue's requests are reported unfinished.
    "overload_horizon": ("llama8b_h100", [
        "workload.num_requests=30000", "workload.rate=10000", "horizon_s=4.0",
    ]),
    # Multi-turn sessions sharing a system prompt (prefix caching, KV block identities).
    "sessions": ("chat_sessions_llama70b_h100", [
        "workload.num_requests=20000", "workload.rate=4000", "workload.think_time_s=0.5",
        "horizon_s=10.0",
    ]),
    # A trace replayed fast (prefix hashes from the trace).
    "trace": ("mooncake_llama8b_h200", ["workload.num_requests=3000", "workload.speedup=20"]),
    # The same trace with a host KV tier (a KV connector: loads wait in the queue).
    "offload": ("mooncake_offload_llama8b_h200", [
        "workload.num_requests=2500", "workload.speedup=20", "kv_offload.compare_hbm_only=false",
    ]),
    # Prefill and decode pools behind the P/D proxy (and the scenario's comparisons: colocated,
    # another split).
    "pd": ("pd_llama70b_h100", [
        "workload.num_requests=2500", "workload.rate=300", "horizon_s=30.0",
    ]),
    # A KV cache far too small for the load: preemptions back to the front of the queue.
    "preemption": ("llama8b_h100", [
        "workload.num_requests=3000", "workload.rate=1000", "scheduler.num_gpu_blocks_override=2000",
        "scheduler.max_model_len=16384", "workload.output_tokens.mean=800",
    ]),
}

SETS = {"default": CASES, "waiting": WAITING_CASES}
_DROPPED_KEYS = ("packages", "python")


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if "wall" not in k and k not in _DROPPED_KEYS}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def file_digest(path: Path, out_dir: Path) -> str:
    if path.suffix == ".json":
        text = path.read_text().replace(str(out_dir), "<out>")  # folders named in the summary
        payload = json.dumps(_clean(json.loads(text)), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digest_case(scenario: str, overrides: list[str]) -> tuple[list[str], dict, int]:
    """Each output file's digest, the summary, and the deepest waiting queue of the run."""
    cfg = compose_scenario(scenario, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        result = simulate(build_run_spec(cfg), Path(tmp), resolved_config(cfg))
        files = sorted(p for p in Path(tmp).rglob("*") if p.is_file())
        lines = [f"{p.relative_to(tmp)} {file_digest(p, Path(tmp))}" for p in files]
        steps = Path(tmp) / "steps.parquet"
        deepest = pc.max(pq.read_table(steps, columns=["num_waiting"])["num_waiting"]).as_py() if steps.exists() else 0
    return lines, result.summary, int(deepest or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", default="default", choices=sorted(SETS), help="which cases")
    parser.add_argument("--only", default="", help="comma-separated case names (default: all of the set)")
    args = parser.parse_args()
    cases = SETS[args.set]
    names = [n for n in args.only.split(",") if n] or list(cases)
    unknown = sorted(set(names) - set(cases))
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(cases)}")
    for name in names:
        scenario, overrides = cases[name]
        start = time.process_time()
        lines, summary, deepest = digest_case(scenario, overrides)
        print(f"== {name}: {scenario} {' '.join(overrides)}")
        for line in lines:
            print(f"   {line}")
        requests = summary["requests"]
        print(f"{name}: {time.process_time() - start:.1f} s CPU, {requests.get('finished')} finished,"
              f" {requests.get('preemptions')} preemptions, deepest waiting queue {deepest}", file=sys.stderr)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
