"""NCCL point-to-point send/recv through torch.distributed: bf16, 4 KiB .. 256 MiB from rank 0
to rank 1, the hand-over of activations between two pipeline stages (tokens x hidden x 2 bytes
per step, and the same back for nothing: vLLM's stages pass forward only). NVLink multicast
stays off.

  torchrun --nproc-per-node 2 calibration/measure_p2p.py --out-dir $OUT --prefix h200x2
  torchrun --nproc-per-node 2 calibration/measure_p2p.py --tiny --out-dir /tmp/calib  # CPU

Method as measure_allreduce.py: per size, warm-ups, then `reps` timed runs of `inner`
back-to-back transfers (a batch of one isend/irecv each, which CUDA graphs can capture); the
median over runs, the maximum over the two ranks. bandwidth = bytes / time.
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
    "src", "dst", "bytes", "mode", "ms", "ms_min", "bandwidth_gbps", "inner", "reps",
    "hardware", "gpus", "gpu", "driver", "torch", "cuda", "nccl", "sm_clock_mhz",
]


def transfer(x: torch.Tensor, rank: int, src: int, dst: int, group) -> None:
    op = dist.P2POp(dist.isend, x, dst, group) if rank == src else dist.P2POp(dist.irecv, x, src, group)
    for work in dist.batch_isend_irecv([op]):
        work.wait()


def main():
    p = comm_parser(__doc__.splitlines()[0])
    args = p.parse_args()
    ranks = start_ranks()
    world, rank, dev = ranks.world, ranks.rank, ranks.device
    if world < 2:
        raise SystemExit("measure_p2p.py needs two ranks: torchrun --nproc-per-node 2")
    prefix = args.prefix or f"{hardware_name()}x{world}"
    out = RowWriter(os.path.join(args.out_dir, f"{prefix}_p2p.csv"), COLUMNS, rank == 0)
    src, dst = 0, 1
    group = dist.new_group([src, dst])
    if rank in (src, dst):
        probe = torch.full((4,), float(rank + 7), device=dev)
        transfer(probe, rank, src, dst, group)
        if rank == dst and not torch.all(probe == float(src + 7)):
            raise AssertionError(f"recv got {probe.tolist()}, expected {src + 7}")
        for nbytes in message_sizes(args.tiny):
            x = torch.randn(nbytes // 2, device=dev, dtype=torch.bfloat16)
            inner = inner_calls(nbytes)
            for mode in ranks.modes:
                ms_list = time_collective(lambda: transfer(x, rank, src, dst, group), inner, args.reps,
                                          mode == "graph", lambda: dist.barrier(group=group))
                ms = slowest_rank_ms(ms_list, group, dev)
                if rank == src:
                    out.write(dict(src=src, dst=dst, bytes=nbytes, mode=mode, ms=ms, ms_min=min(ms_list),
                                   bandwidth_gbps=nbytes / ms / 1e6, inner=inner, reps=args.reps,
                                   **ranks.row_facts()))
                    print(f"p2p {src}->{dst} {nbytes:>10d} B {mode:5s} {ms * 1e3:9.1f} us  "
                          f"{nbytes / ms / 1e6:7.1f} GB/s", flush=True)
            del x
    dist.barrier()
    if rank == 0:
        print(f"wrote {out.count} send/recv rows", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
