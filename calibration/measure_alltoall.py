"""NCCL all-to-all through torch.distributed (`all_to_all_single`, equal splits): bf16,
4 KiB .. 256 MiB per rank, over the first ep GPUs for each ep in --ep, one process per GPU.
This is the exchange of an expert-parallel MoE layer: the dispatch sends each token's hidden
state to the ranks of its top-k experts, the combine brings the results back, so one layer is
two all-to-alls of tokens x top_k x hidden x bytes / ep per rank pair. NVLink multicast stays
off.

  torchrun --nproc-per-node 8 calibration/measure_alltoall.py --out-dir $OUT --prefix h200x8
  torchrun --nproc-per-node 2 calibration/measure_alltoall.py --tiny --out-dir /tmp/calib  # CPU

Method as measure_allreduce.py (nccl-tests'): per size, warm-ups, then `reps` timed runs of
`inner` back-to-back calls; the median over runs, the maximum over ranks. `bytes` is what each
rank sends in all (its whole input buffer, 1/ep of it to each rank, itself included);
algbw = bytes / time; busbw = (ep - 1) / ep x algbw, the part that crosses links.
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
    "ep", "bytes", "mode", "ms", "ms_min", "algbw_gbps", "busbw_gbps", "inner", "reps",
    "hardware", "gpus", "gpu", "driver", "torch", "cuda", "nccl", "sm_clock_mhz",
]


def check_exchange(group, ranks: list[int], dev: str) -> None:
    """Each rank's chunk j must arrive at rank j: a wrong split would time the wrong thing."""
    n = len(ranks)
    me = ranks.index(dist.get_rank())
    x = torch.arange(n, device=dev, dtype=torch.float32) + 100.0 * me
    y = torch.empty_like(x)
    dist.all_to_all_single(y, x, group=group)
    want = torch.arange(n, device=dev, dtype=torch.float32) * 100.0 + me
    if not torch.equal(y, want):
        raise AssertionError(f"all-to-all gave {y.tolist()}, expected {want.tolist()}")


def main():
    p = comm_parser(__doc__.splitlines()[0])
    p.add_argument("--ep", default="2,4,8")
    args = p.parse_args()
    ranks = start_ranks()
    world, rank, dev = ranks.world, ranks.rank, ranks.device
    prefix = args.prefix or f"{hardware_name()}x{world}"
    out = RowWriter(os.path.join(args.out_dir, f"{prefix}_alltoall.csv"), COLUMNS, rank == 0)
    for ep in (int(v) for v in args.ep.split(",")):
        if ep > world:
            continue
        members = list(range(ep))
        group = dist.new_group(members)  # every rank takes part in creating it
        if rank in members:
            check_exchange(group, members, dev)
            for nbytes in message_sizes(args.tiny):
                elems = max(ep, nbytes // 2 // ep * ep)  # equal splits
                x = torch.randn(elems, device=dev, dtype=torch.bfloat16)
                y = torch.empty_like(x)
                inner = inner_calls(nbytes)
                for mode in ranks.modes:
                    ms_list = time_collective(lambda: dist.all_to_all_single(y, x, group=group), inner,
                                              args.reps, mode == "graph", lambda: dist.barrier(group=group))
                    ms = slowest_rank_ms(ms_list, group, dev)
                    sent = elems * 2
                    algbw = sent / ms / 1e6
                    if rank == 0:
                        out.write(dict(ep=ep, bytes=sent, mode=mode, ms=ms, ms_min=min(ms_list),
                                       algbw_gbps=algbw, busbw_gbps=(ep - 1) / ep * algbw,
                                       inner=inner, reps=args.reps, **ranks.row_facts()))
                        print(f"ep={ep} {sent:>10d} B {mode:5s} {ms * 1e3:9.1f} us  "
                              f"busbw {(ep - 1) / ep * algbw:7.1f} GB/s", flush=True)
                del x, y
        dist.barrier()
    if rank == 0:
        print(f"wrote {out.count} all-to-all rows", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
