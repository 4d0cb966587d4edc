"""Shared helpers of the calibration scripts: model shapes, timing, GPU facts, CSV output.

Timing follows the method of shared/calibration (h100_sxm_gemm.csv): CUDA events, warm-ups
first, the median of >= 10 timed runs. Where a region is captured in a CUDA graph, the events
bracket one graph replay (several back-to-back calls of the op when `inner` > 1).
On a machine without CUDA (the CPU smoke test) the same code times with perf_counter.
"""

from __future__ import annotations

import csv
import os
import statistics
import subprocess
import time
from dataclasses import dataclass

# NVLink multicast off before torch loads NCCL: multicast can harm a shared host (device README).
for _var in ("NCCL_NVLS_ENABLE", "TORCH_SYMM_MEM_DISABLE_MULTICAST", "NVSHMEM_DISABLE_NVLS"):
    os.environ[_var] = "0" if _var == "NCCL_NVLS_ENABLE" else "1"

import torch  # noqa: E402


@dataclass(frozen=True)
class Arch:
    """Shapes of one Llama-style decoder (Hugging Face config names, full model, before TP)."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    qkv_bias: bool = False
    rms_eps: float = 1e-5


ARCHS = {
    "llama3_8b": Arch("llama3_8b", 32, 4096, 32, 8, 128, 14336, 128256),
    "qwen2_7b": Arch("qwen2_7b", 28, 3584, 28, 4, 128, 18944, 152064, qkv_bias=True, rms_eps=1e-6),
    "llama3_70b": Arch("llama3_70b", 80, 8192, 64, 8, 128, 28672, 128256),
    # CPU smoke test only: small enough to run the whole script on a laptop in seconds.
    "tiny": Arch("tiny", 2, 256, 4, 2, 64, 512, 1000, qkv_bias=True),
}

# Names the simulator uses for the machines (sim hardware configs).
HARDWARE_NAMES = {"H100": "h100_sxm", "H200": "h200"}


def hardware_name() -> str:
    if not torch.cuda.is_available():
        return "cpu"
    gpu = torch.cuda.get_device_name()
    for key, name in HARDWARE_NAMES.items():
        if key in gpu:
            return name
    return gpu.replace(" ", "_").lower()


class Budget:
    """Wall-clock allowance of a sweep: loops stop starting new work once it is spent."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def left_s(self) -> float:
        return self.deadline - time.monotonic()

    def spent(self) -> bool:
        return self.left_s() <= 0.0


class RowWriter:
    """A CSV whose rows are flushed one by one, so a run cut short still leaves its rows."""

    def __init__(self, path: str, columns: list[str], enabled: bool = True):
        self.columns = columns
        self.enabled = enabled
        self.count = 0
        if enabled:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._file = open(path, "w", newline="")
            self._csv = csv.DictWriter(self._file, fieldnames=columns)
            self._csv.writeheader()
            self._file.flush()

    def write(self, row: dict) -> None:
        unknown = set(row) - set(self.columns)
        if unknown:
            raise KeyError(f"columns not declared: {sorted(unknown)}")
        self.count += 1
        if self.enabled:
            self._csv.writerow({k: _fmt(v) for k, v in row.items()})
            self._file.flush()


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


# ---- GPU facts ---------------------------------------------------------------------------

try:  # NVML reads clocks in microseconds, unlike a nvidia-smi process (~50 ms)
    import pynvml

    pynvml.nvmlInit()
except Exception:  # noqa: BLE001 - any failure means: no NVML, fall back to nothing
    pynvml = None


def clocks(index: int = 0) -> dict:
    """SM and memory clocks (MHz), power (W) and temperature (C) read now; blanks if unreadable."""
    if pynvml is None:
        return {"sm_clock_mhz": "", "mem_clock_mhz": "", "power_w": "", "temp_c": ""}
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        return {
            "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
            "mem_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM),
            "power_w": round(pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0),
            "temp_c": pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
        }
    except Exception:  # noqa: BLE001
        return {"sm_clock_mhz": "", "mem_clock_mhz": "", "power_w": "", "temp_c": ""}


def machine_facts(index: int = 0) -> dict:
    """What a CSV row says of the machine: GPU, driver, software versions, clock ceilings."""
    facts = {
        "gpu": "cpu",
        "driver": "",
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "",
        "max_sm_clock_mhz": "",
        "power_limit_w": "",
    }
    if not torch.cuda.is_available():
        return facts
    facts["gpu"] = torch.cuda.get_device_name(index).replace(" ", "_")
    query = "driver_version,clocks.max.sm,power.limit"
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits", "-i", str(index)],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.strip().split(", ")
        facts.update(driver=out[0], max_sm_clock_mhz=out[1], power_limit_w=out[2])
    except Exception as e:  # noqa: BLE001
        print(f"nvidia-smi unreadable: {e}")
    return facts


def describe_device() -> str:
    if not torch.cuda.is_available():
        return "cpu"
    p = torch.cuda.get_device_properties(0)
    l2 = getattr(p, "L2_cache_size", 0) / 2**20
    return (f"{p.name}: {p.multi_processor_count} SMs, {p.total_memory / 2**30:.1f} GiB, "
            f"L2 {l2:.0f} MiB, torch {torch.__version__}, CUDA {torch.version.cuda}, "
            f"cuDNN {torch.backends.cudnn.version()}")


def l2_bytes() -> int:
    if not torch.cuda.is_available():
        return 1 << 20
    return int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 << 20))


# ---- timing ------------------------------------------------------------------------------


@dataclass
class Timing:
    """Per-call times of one benchmark (ms) and the clocks read while it ran."""

    ms: list[float]
    clocks: dict

    @property
    def median(self) -> float:
        return statistics.median(self.ms)

    @property
    def spread(self) -> float:
        """(p90 - p10) / median: how steady the runs were."""
        q = statistics.quantiles(self.ms, n=10) if len(self.ms) > 1 else [self.ms[0]] * 9
        return (q[-1] - q[0]) / self.median


def bench(fn, *, graph: bool, warmup: int = 3, reps: int = 15, inner: int = 1) -> Timing:
    """Time `fn` (which launches device work) and return per-call ms.

    graph=True: `inner` back-to-back calls are captured in one CUDA graph after warm-ups on a
    side stream (compilation, cuBLAS handles and workspaces happen there, not in the capture);
    each timed run is one replay between two CUDA events. graph=False: each timed run is
    `inner` eager calls between two events, so host launch time shows wherever it exceeds the
    GPU time.
    """
    if not torch.cuda.is_available():
        return _bench_cpu(fn, warmup, reps, inner)
    g = None
    if graph:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        # thread_local: CUDA calls of other threads (the NCCL watchdog polling events of
        # earlier collectives) must not invalidate the capture.
        with torch.cuda.graph(g, capture_error_mode="thread_local"):
            for _ in range(inner):
                fn()

        def run():
            g.replay()
    else:

        def run():
            for _ in range(inner):
                fn()

    for _ in range(warmup):
        run()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        starts[i].record()
        run()
        ends[i].record()
    seen = clocks(torch.cuda.current_device())  # read while the timed runs are in flight
    torch.cuda.synchronize()
    ms = [s.elapsed_time(e) / inner for s, e in zip(starts, ends)]
    del g
    return Timing(ms, seen)


def _bench_cpu(fn, warmup: int, reps: int, inner: int) -> Timing:
    for _ in range(warmup):
        fn()
    ms = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        ms.append((time.perf_counter() - t0) * 1e3 / inner)
    return Timing(ms, clocks())


def free_cuda_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def time_collective(op, inner: int, reps: int, graph: bool, barrier=None) -> list[float]:
    """Per-call ms of a collective `op()` (one call launches one collective), nccl-tests'
    method: 5 warm-up calls, then `reps` timed runs of `inner` back-to-back calls each;
    graph=True captures the `inner` calls in one CUDA graph, as a decode step issues them.
    `barrier()` lines the ranks up before each timed run. On CPU (gloo) perf_counter times."""
    for _ in range(5):
        op()
    if not torch.cuda.is_available():
        out = []
        for _ in range(reps):
            if barrier is not None:
                barrier()
            t0 = time.perf_counter()
            for _ in range(inner):
                op()
            out.append((time.perf_counter() - t0) * 1e3 / inner)
        return out
    g = None
    if graph:
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, capture_error_mode="thread_local"):
            for _ in range(inner):
                op()
    out = []
    for _ in range(reps):
        if barrier is not None:
            barrier()
        torch.cuda.synchronize()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        if graph:
            g.replay()
        else:
            for _ in range(inner):
                op()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b) / inner)
    return out


def inner_calls(nbytes: int) -> int:
    """Back-to-back calls per timed run: many for small messages (their time is microseconds),
    few for large ones."""
    return 50 if nbytes <= 2**20 else 20 if nbytes <= 2**24 else 5


def message_sizes(tiny: bool) -> list[int]:
    """4 KiB .. 256 MiB in powers of two (a decode step's messages up to a long prefill's);
    the CPU smoke test stops at 64 KiB."""
    return [2**k for k in range(12, 17 if tiny else 29)]


def slowest_rank_ms(ms: list[float], group, device: str) -> float:
    """The median of this rank's runs, then the maximum over the group's ranks: a collective
    is as slow as its slowest member."""
    import torch.distributed as dist

    med = torch.tensor([statistics.median(ms)], device=device, dtype=torch.float64)
    dist.all_reduce(med, op=dist.ReduceOp.MAX, group=group)
    return float(med.item())


def comm_parser(description: str):
    """The flags every communication sweep takes; a script adds its group sizes."""
    import argparse

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out-dir", default=os.environ.get("OUT", "calibration/data"))
    p.add_argument("--prefix", default=None)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--tiny", action="store_true")
    return p


@dataclass(frozen=True)
class Ranks:
    """This process's place in a torchrun job (NCCL on GPUs, gloo on CPU) and its machine."""

    local: int
    rank: int
    world: int
    device: str
    nccl: str
    facts: dict

    @property
    def cuda(self) -> bool:
        return self.device != "cpu"

    @property
    def modes(self) -> tuple[str, ...]:
        return ("graph", "eager") if self.cuda else ("eager",)

    def row_facts(self) -> dict:
        """The machine columns of a CSV row, the SM clock read now."""
        clk = clocks(self.local) if self.cuda else {}
        return dict(hardware=hardware_name(), gpus=self.world, nccl=self.nccl,
                    sm_clock_mhz=clk.get("sm_clock_mhz", ""),
                    **{k: self.facts[k] for k in ("gpu", "driver", "torch", "cuda")})  # fmt: skip


def start_ranks() -> Ranks:
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo")
    nccl = ".".join(map(str, torch.cuda.nccl.version())) if cuda else ""
    device = f"cuda:{local}" if cuda else "cpu"
    return Ranks(local, dist.get_rank(), dist.get_world_size(), device, nccl, machine_facts(local))
