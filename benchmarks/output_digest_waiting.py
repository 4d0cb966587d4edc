"""Digests of every output of runs whose waiting queues grow deep, to check that a change to how
waiting requests are stored leaves every output the same, to the byte.

    python benchmarks/output_digest_waiting.py            # every case
    python benchmarks/output_digest_waiting.py pd trace   # some of them

Each case runs in this process into a temporary folder; each output file (subfolders too) is
printed with its sha256 (and, apart, the deepest waiting queue of its steps). Parquet files are hashed as written; in the JSON files the fields
that hold wall-clock time (keys containing "wall") are left out, and so are the package
versions and the Python version, which say nothing about the run; the temporary folder's path
reads "<out>". The last line is one digest
over all the lines above it: run the script before and after a change and compare.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
from harness import compose_scenario

from sim.config.build import build_run_spec, resolved_config
from sim.run import simulate

# Each case: a scenario and overrides that make its waiting queue grow past the part of the
# queue kept as objects (sim.core.waiting_queue), so requests are stored compactly, taken out
# at the head, scheduled, preempted, and, with a horizon, reported unfinished from the queue.
CASES: dict[str, tuple[str, list[str]]] = {
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


def case_lines(name: str) -> list[str]:
    scenario, overrides = CASES[name]
    cfg = compose_scenario(scenario, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        simulate(build_run_spec(cfg), Path(tmp), resolved_config(cfg))
        files = sorted(p for p in Path(tmp).rglob("*") if p.is_file())
        deepest = pq.read_table(Path(tmp) / "steps.parquet", columns=["num_waiting"])["num_waiting"]
        print(f"{name:18s} (deepest waiting queue {pc.max(deepest).as_py()} requests)", flush=True)
        return [f"{name:18s} {p.relative_to(tmp)!s:32s} {file_digest(p, Path(tmp))}" for p in files]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cases", nargs="*", help=f"some of {', '.join(CASES)} (default: all)")
    names = parser.parse_args().cases or list(CASES)
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    lines: list[str] = []
    for name in names:
        out = case_lines(name)
        print("\n".join(out), flush=True)
        lines += out
    print("all".ljust(51), hashlib.sha256("\n".join(lines).encode()).hexdigest())


if __name__ == "__main__":
    main()
