"""The price of moving KV blocks: one queue of copy jobs per direction of a link.

Behaviour matched: vLLM 0.24.0 `vllm/v1/kv_offload/worker/cpu_gpu.py`
(`SingleDirectionOffloadingHandler`): each direction (GPU->CPU stores, CPU->GPU loads) has its
own CUDA streams, and a job starts only after the previous job of the same direction has
finished, so the jobs of one direction run one after the other while the two directions
overlap each other and the model's kernels (the copy engines are separate from the SMs). A job
copies its blocks with `ops.swap_blocks`: one `cudaMemcpyAsync` per block and per KV tensor.

So a job of n blocks of b bytes, with k KV tensors per block, takes

    latency + n x k x per_copy + n x b / bandwidth

where `latency` is the job's fixed cost (enqueue, first copy's start), `per_copy` the copy
engine's cost of one more memcpy, and `bandwidth` the link's rate in one direction. On the H200
all three are measured (calibration/data/h200_host_link.csv, fit by
calibration/fit_host_link.py): 54.8 GB/s each way over PCIe gen5 x16, about 20 us per job and
2.9 us per copy, so a 2 MiB block (16 tokens of Llama-3.1-8B, all layers) costs 41 us and the
same block as 64 per-layer K and V pages of 32 KiB costs 226 us (before the job's 20 us).

The measured duplex rate (a load and a store at once) is 12% lower each way (48 GB/s);
DIVERGENCE: the two directions are priced independently at the one-way rate, and the copies'
HBM traffic (about 1% of the H200's HBM bandwidth) does not slow the model's kernels.

Plain Python: `submit` takes the time the job may start and returns when it ends.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """One direction's price: SI units (seconds, bytes/s)."""

    bandwidth: float  # bytes/s, one direction
    latency_s: float  # per job
    per_copy_s: float = 0.0  # per memcpy beyond the data time

    def job_time_s(self, num_copies: int, num_bytes: int) -> float:
        return self.latency_s + num_copies * self.per_copy_s + num_bytes / self.bandwidth


class CopyQueue:
    """Jobs of one direction, in submission order, each after the previous one ends."""

    def __init__(self, link: LinkSpec) -> None:
        self.link = link
        self.free_at_s = 0.0  # when the last submitted job ends
        self.busy_s = 0.0  # total time spent copying
        self.num_jobs = 0
        self.bytes_moved = 0

    def submit(self, ready_s: float, num_copies: int, num_bytes: int) -> float:
        """A job that may start at `ready_s`: when it ends."""
        duration = self.link.job_time_s(num_copies, num_bytes)
        start = ready_s if ready_s > self.free_at_s else self.free_at_s
        self.free_at_s = end = start + duration
        self.busy_s += duration
        self.num_jobs += 1
        self.bytes_moved += num_bytes
        return end
