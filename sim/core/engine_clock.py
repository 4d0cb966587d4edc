"""When each part of an engine step happens: the engine-core loop's CPU and the GPU's stream.

Behaviour matched: vLLM 0.24.0 `vllm/v1/engine/core.py`. With async scheduling (the default)
the engine core keeps a batch queue of two (`step_with_batch_queue`), one iteration of its
busy loop being:

    CPU:  schedule(k+1) | launch(k+1) | wait for GPU(k) | update(k) | next iteration
    GPU:  ...... GPU(k) ............... | GPU(k+1) ...............................

so the CPU prepares step k+1 while the GPU runs step k, and step k's tokens are applied (and
sent to the client) only after step k+1 has been scheduled and launched. A request that
arrives during an iteration is added at its end, so it is scheduled in step k+2 at the
earliest; blocks that step k frees are free for step k+2. The first step after an idle engine
has nothing in flight: it is launched and the loop schedules the next one at once.

Without async scheduling (`EngineCore.step`) each iteration is schedule, launch, wait, update:
the CPU work is serial with the GPU's.

A launch overlaps its own GPU work: kernels run as they are launched, so a step's GPU work
ends at max(GPU start + GPU time, end of its launch).

DIVERGENCE: a launch is one CPU interval per CUDA-graph mode (the step log shows only the
total of input preparation and kernel launches), and the API process's and input thread's
work on a new request is one fixed latency before the engine core sees it.

Pipeline parallelism and DP attention (`ParallelEngineClock`): vLLM keeps up to
`max_concurrent_batches` steps in flight (pp + 1 with async scheduling); each step runs its
stages in order, stage i on its own GPUs once the step before has left it, so pp steps can be
on the GPUs at once. A step that decodes a request starts its first stage only after the last
stage of the step that sampled that request's previous token (the token travels back to the
first stage). Too few ready steps leave stages idle: the pipeline bubble. With DP attention
each rank's engine core schedules, launches and applies its own share of the requests, in
parallel with the others: the CPU costs are those of one rank's share.

Plain Python: the SimPy replica asks this for times and sleeps until them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.cost.engine_costs import CUDAGRAPH_FULL, EngineCosts, cudagraph_mode


@dataclass(slots=True)
class StepTiming:
    """One step's times (simulated seconds); built for every step, hence not frozen."""

    schedule_start_s: float
    launch_end_s: float  # schedule() and the launch done: the CPU is free
    gpu_start_s: float
    gpu_end_s: float
    gpu_time_s: float  # kernels priced by the cost model plus the runtime's own GPU work
    cpu_time_s: float  # schedule + launch (the update is added when the step is applied)
    cudagraph_mode: str


class EngineClock:
    """The GPU's queue of launched work, and the CPU costs of the loop."""

    def __init__(self, costs: EngineCosts, capture_size: int, rng: np.random.Generator | None = None) -> None:
        """`rng`: the replica's engine stream, for the launches' spread (none: medians)."""
        self.costs = costs
        self.capture_size = capture_size
        self.gpu_free_s = 0.0  # when the GPU has finished everything launched so far
        self._rng = rng if costs.launch_log_sigma > 0.0 else None

    def launch(self, now: float, num_tokens: int, num_reqs: int, num_decodes: int,
               kernel_time_s: float, stage_times_s: tuple[float, ...] = ()) -> StepTiming:  # fmt: skip
        """Schedule and launch a step at `now` whose kernels take `kernel_time_s` on the GPU."""
        costs = self.costs
        mode, schedule_end_s, launch_end_s = self._cpu_launch(now, num_tokens, num_reqs, num_decodes)
        gpu_time_s = kernel_time_s + costs.runtime_gpu_s(num_decodes)
        gpu_start_s = max(self.gpu_free_s, schedule_end_s)
        gpu_end_s = max(gpu_start_s + gpu_time_s, launch_end_s)
        self.gpu_free_s = gpu_end_s
        return StepTiming(
            schedule_start_s=now,
            launch_end_s=launch_end_s,
            gpu_start_s=gpu_start_s,
            gpu_end_s=gpu_end_s,
            gpu_time_s=gpu_time_s,
            cpu_time_s=launch_end_s - now,
            cudagraph_mode=mode,
        )

    def _cpu_launch(self, now: float, num_tokens: int, num_reqs: int, num_decodes: int) -> tuple[str, float, float]:
        """The step's CUDA-graph mode, and when schedule() and the launch end (a PIECEWISE or
        eager launch drawn around its median from the engine stream)."""
        costs = self.costs
        mode = cudagraph_mode(num_tokens, num_reqs, num_decodes, self.capture_size)
        schedule_end_s = now + costs.schedule_time_s(num_reqs)
        launch_s = costs.launch_time_s(mode, num_reqs)
        if self._rng is not None and mode != CUDAGRAPH_FULL:
            launch_s *= float(np.exp(costs.launch_log_sigma * self._rng.standard_normal()))
        return mode, schedule_end_s, schedule_end_s + launch_s

    def empty_schedule_end_s(self, now: float) -> float:
        """A schedule() that found nothing to run."""
        return now + self.costs.schedule_time_s(0)

    def update_end_s(self, cpu_free_s: float, step: StepTiming, num_reqs: int) -> float:
        """The CPU waits for the step's GPU work (and its sampled tokens), then applies it."""
        return max(cpu_free_s, step.gpu_end_s) + self.costs.update_time_s(num_reqs)

    def emit_s(self, update_end_s: float, num_outputs: int) -> float:
        """When the step's tokens reach the client."""
        return update_end_s + self.costs.output_latency_s(num_outputs)


class ParallelEngineClock(EngineClock):
    """The clock of an engine with pipeline stages and/or data-parallel attention ranks."""

    def __init__(
        self, costs: EngineCosts, capture_size: int, rng: np.random.Generator | None = None,
        pp: int = 1, dp: int = 1, scheduler: object | None = None,
    ) -> None:  # fmt: skip
        super().__init__(costs, capture_size, rng)
        self.pp, self.dp = pp, dp
        self.stage_free_s = [0.0] * pp  # when each stage's GPUs finish what they were given
        self.scheduler = scheduler  # a PipelineScheduler: the step index and its dependency
        self._step_end_s: dict[int, float] = {}  # step index -> its last stage's end

    def _per_rank(self, count: int) -> int:
        return -(-count // self.dp)

    def launch(self, now: float, num_tokens: int, num_reqs: int, num_decodes: int,
               kernel_time_s: float, stage_times_s: tuple[float, ...] = ()) -> StepTiming:  # fmt: skip
        costs = self.costs
        num_tokens, num_reqs, num_decodes = map(self._per_rank, (num_tokens, num_reqs, num_decodes))
        mode, schedule_end_s, launch_end_s = self._cpu_launch(now, num_tokens, num_reqs, num_decodes)
        runtime_s = costs.runtime_gpu_s(num_decodes)
        if self.pp == 1 or not stage_times_s:
            gpu_start_s = max(self.gpu_free_s, schedule_end_s)
            gpu_end_s = max(gpu_start_s + kernel_time_s + runtime_s, launch_end_s)
            self.gpu_free_s = gpu_end_s
            return StepTiming(now, launch_end_s, gpu_start_s, gpu_end_s, kernel_time_s + runtime_s,
                              launch_end_s - now, mode)  # fmt: skip
        # The stages' times as priced, scaled to the kernel time given (a power cap may have
        # stretched it); the runtime's own work (sampling) on the last stage.
        scale = kernel_time_s * self.pp / sum(stage_times_s) if sum(stage_times_s) > 0 else 0.0
        ready_s = schedule_end_s
        scheduler = self.scheduler
        step = -1
        if scheduler is not None:
            step = scheduler.current_step - 1
            ready_s = max(ready_s, self._step_end_s.get(scheduler.dependency_step, 0.0))
        stage_free = self.stage_free_s
        t = ready_s
        gpu_start_s = 0.0
        for i, stage_s in enumerate(stage_times_s):
            begin = stage_free[i] if stage_free[i] > t else t
            if i == 0:
                gpu_start_s = begin
            t = begin + stage_s * scale + (runtime_s if i == self.pp - 1 else 0.0)
            stage_free[i] = t
        gpu_end_s = max(t, launch_end_s)
        self.gpu_free_s = gpu_end_s
        if step >= 0:
            ends = self._step_end_s
            ends[step] = gpu_end_s
            if len(ends) > 4 * self.pp + 4:  # older steps ended long ago
                del ends[next(iter(ends))]
        return StepTiming(
            schedule_start_s=now,
            launch_end_s=launch_end_s,
            gpu_start_s=gpu_start_s,
            gpu_end_s=gpu_end_s,
            gpu_time_s=kernel_time_s + runtime_s / self.pp,
            cpu_time_s=launch_end_s - now,
            cudagraph_mode=mode,
        )

    def update_end_s(self, cpu_free_s: float, step: StepTiming, num_reqs: int) -> float:
        return super().update_end_s(cpu_free_s, step, self._per_rank(num_reqs))

    def emit_s(self, update_end_s: float, num_outputs: int) -> float:
        return super().emit_s(update_end_s, self._per_rank(num_outputs))
