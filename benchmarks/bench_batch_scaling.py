"""What one engine step costs the simulator, split into a part per step and a part per decode.

    python benchmarks/bench_batch_scaling.py                 # batches of 16, 64 and 256 decodes
    python benchmarks/bench_batch_scaling.py --batches 32 512 --tokens 1000
    python benchmarks/bench_batch_scaling.py --scenario llama70b_h100   # its model and GPUs

Every request of the run arrives at t = 0 with a 16-token prompt and the same output length,
so almost every step is a steady decode of the whole batch. The CPU time of a step is fitted
as a + b x decodes over the batch sizes, with prefix caching on (vLLM's default: a decode
publishes each block it fills) and off: `a` is what a step costs whatever it holds (the clock,
the cost model, the step's row, the SimPy events), `b` what each decode adds (the scheduler's
running loop, the update, the token delivery, the KV blocks it crosses into). Step leaping or
batched decodes would cut `b`; `a` stays per step. The run that differs least from it sets the
figure: run it on an idle machine, and more than once.
"""

from __future__ import annotations

import argparse

import numpy as np
from harness import compose_scenario, time_runs


def step_cpu_us(scenario: str, batch: int, tokens: int, caching: bool, repeat: int) -> tuple[float, int]:
    """Best CPU microseconds per engine step over `repeat` runs, and the number of steps."""
    cfg = compose_scenario(scenario, [
        "workload=offline", f"workload.num_requests={batch}", "workload.lengths_from=null",
        "workload.prompt_tokens.kind=fixed", "workload.prompt_tokens.value=16",
        "workload.output_tokens.kind=fixed", f"workload.output_tokens.value={tokens}",
        f"scheduler.enable_prefix_caching={str(caching).lower()}", "output.write_steps=false",
        "output.timeline_interval_s=0",
    ])  # fmt: skip
    timing = time_runs(cfg, repeat, time_build=False)
    steps = timing.result.manifest["engine_steps"]
    return min(timing.cpus_s) / steps * 1e6, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="llama8b_h100", help="its model, GPU and layout; the workload is replaced")
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--tokens", type=int, default=2000, help="output tokens of every request")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    for caching in (True, False):
        per_step = []
        for batch in args.batches:
            us, steps = step_cpu_us(args.scenario, batch, args.tokens, caching, args.repeat)
            per_step.append(us)
            print(f"prefix caching {'on ' if caching else 'off'}  batch {batch:5,}  {steps:7,} steps"
                  f"  {us:8.1f} us of CPU per step  ({us / batch:6.2f} per decode)")
        b, a = np.polyfit(np.asarray(args.batches, dtype=float), np.asarray(per_step), 1)
        print(f"prefix caching {'on ' if caching else 'off'}  fit: {a:.1f} us per step + {b:.2f} us per decode")


if __name__ == "__main__":
    main()
