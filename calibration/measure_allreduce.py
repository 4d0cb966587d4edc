"""NCCL all-reduce through torch.distributed: bf16, 4 KiB .. 256 MiB, over the first tp GPUs
for each tp in --tp, one process per GPU. NVLink multicast (NVLS) stays off.

  torchrun --nproc-per-node 4 calibration/measure_allreduce.py --out-dir $OUT --prefix h200x4
  torchrun --nproc-per-node 2 calibration/measure_allreduce.py --tiny --out-dir /tmp/calib  # CPU

Method (that of nccl-tests): per message size, 5 warm-up all-reduces, then `reps` timed runs,
each a loop of `inner` back-to-back all-reduces between two CUDA events; the per-op time is the
run's time over `inner`, the figure the median over runs, the max over ranks. Mode "graph"
captures the `inner` all-reduces in one CUDA graph (how a decode step issues them), "eager"
launches them from Python. algbw = bytes / time; busbw = 2 (n - 1) / n * algbw.
"""

from __future__ import annotations

import argparse
import os

for _var, _val in (("NCCL_NVLS_ENABLE", "0"), ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1"),
                   ("NVSHMEM_DISABLE_NVLS", "1")):
    os.environ[_var] = _val  # before torch loads NCCL: multicast can harm the shared host

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from calib_common import (  # noqa: E402
    RowWriter, clocks, hardware_name, inner_calls, machine_facts, message_sizes, slowest_rank_ms,
    time_collective,
)

COLUMNS = [
    "tp", "bytes", "mode", "ms", "ms_min", "algbw_gbps", "busbw_gbps", "inner", "reps",
    "hardware", "gpus", "gpu", "driver", "torch", "cuda", "nccl", "sm_clock_mhz",
]


def check_sum(group, ranks, dev) -> None:
    x = torch.full((1024,), float(dist.get_rank() + 1), device=dev, dtype=torch.bfloat16)
    dist.all_reduce(x, group=group)
    want = float(sum(r + 1 for r in ranks))
    if not torch.all(x == want):
        raise AssertionError(f"all-reduce gave {x[0].item()}, expected {want}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", default=os.environ.get("OUT", "calibration/data"))
    p.add_argument("--prefix", default=None)
    p.add_argument("--tp", default="2,4")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--tiny", action="store_true")
    args = p.parse_args()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo")
    world, rank = dist.get_world_size(), dist.get_rank()
    dev = f"cuda:{local}" if cuda else "cpu"
    facts = machine_facts(local)
    nccl = ".".join(map(str, torch.cuda.nccl.version())) if cuda else ""
    prefix = args.prefix or f"{hardware_name()}x{world}"
    out = RowWriter(os.path.join(args.out_dir, f"{prefix}_allreduce.csv"), COLUMNS, rank == 0)
    sizes = message_sizes(args.tiny)
    modes = ("graph", "eager") if cuda else ("eager",)
    for tp in (int(v) for v in args.tp.split(",")):
        if tp > world:
            continue
        ranks = list(range(tp))
        group = dist.new_group(ranks)  # every rank takes part in creating it
        if rank in ranks:
            check_sum(group, ranks, dev)
            for nbytes in sizes:
                x = torch.randn(nbytes // 2, device=dev, dtype=torch.bfloat16)
                inner = inner_calls(nbytes)
                for mode in modes:
                    ms_list = time_collective(lambda: dist.all_reduce(x, group=group), inner, args.reps,
                                              mode == "graph", lambda: dist.barrier(group=group))
                    clk = clocks(local) if cuda else {}
                    ms = slowest_rank_ms(ms_list, group, dev)
                    algbw = nbytes / ms / 1e6
                    if rank == 0:
                        out.write(dict(tp=tp, bytes=nbytes, mode=mode, ms=ms, ms_min=min(ms_list),
                                       algbw_gbps=algbw, busbw_gbps=2 * (tp - 1) / tp * algbw,
                                       inner=inner, reps=args.reps, hardware=hardware_name(),
                                       gpus=world, nccl=nccl,
                                       sm_clock_mhz=clk.get("sm_clock_mhz", ""),
                                       **{k: facts[k] for k in ("gpu", "driver", "torch", "cuda")}))
                        print(f"tp={tp} {nbytes:>10d} B {mode:5s} {ms * 1e3:9.1f} us  "
                              f"busbw {2 * (tp - 1) / tp * algbw:7.1f} GB/s", flush=True)
                del x
        dist.barrier()
    if rank == 0:
        print(f"wrote {out.count} all-reduce rows", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
