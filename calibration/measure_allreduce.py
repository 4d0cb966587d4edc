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

import os

from calib_common import (  # calib_common first: it turns multicast off before torch loads NCCL
    RowWriter, comm_parser, hardware_name, inner_calls, message_sizes, slowest_rank_ms, start_ranks,
    time_collective,
)
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402


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
    p = comm_parser(__doc__.splitlines()[0])
    p.add_argument("--tp", default="2,4")
    args = p.parse_args()
    ranks = start_ranks()
    world, rank, dev = ranks.world, ranks.rank, ranks.device
    prefix = args.prefix or f"{hardware_name()}x{world}"
    out = RowWriter(os.path.join(args.out_dir, f"{prefix}_allreduce.csv"), COLUMNS, rank == 0)
    for tp in (int(v) for v in args.tp.split(",")):
        if tp > world:
            continue
        members = list(range(tp))
        group = dist.new_group(members)  # every rank takes part in creating it
        if rank in members:
            check_sum(group, members, dev)
            for nbytes in message_sizes(args.tiny):
                x = torch.randn(nbytes // 2, device=dev, dtype=torch.bfloat16)
                inner = inner_calls(nbytes)
                for mode in ranks.modes:
                    ms_list = time_collective(lambda: dist.all_reduce(x, group=group), inner, args.reps,
                                              mode == "graph", lambda: dist.barrier(group=group))
                    ms = slowest_rank_ms(ms_list, group, dev)
                    algbw = nbytes / ms / 1e6
                    if rank == 0:
                        out.write(dict(tp=tp, bytes=nbytes, mode=mode, ms=ms, ms_min=min(ms_list),
                                       algbw_gbps=algbw, busbw_gbps=2 * (tp - 1) / tp * algbw,
                                       inner=inner, reps=args.reps, **ranks.row_facts()))
                        print(f"tp={tp} {nbytes:>10d} B {mode:5s} {ms * 1e3:9.1f} us  "
                              f"busbw {2 * (tp - 1) / tp * algbw:7.1f} GB/s", flush=True)
                del x
        dist.barrier()
    if rank == 0:
        print(f"wrote {out.count} all-reduce rows", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
