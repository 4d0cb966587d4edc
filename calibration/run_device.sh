#!/usr/bin/env bash
# The device calls that produced calibration/data/. Run from anywhere inside the repository:
#   bash calibration/run_device.sh h100     # one H100 SXM: bandwidth, steps + ops, attention
#   bash calibration/run_device.sh h200     # one H200: bandwidth, steps + ops, attention
#   bash calibration/run_device.sh h200x4   # four H200: NCCL all-reduce, Llama-3.1-70B TP4 steps
#   bash calibration/run_device.sh h200fp8  # one H200: FP8 GEMMs, FP8-KV attention, FP8 steps
#   bash calibration/run_device.sh h200fp8f16  # one H200: the fp16-product FP8 attention variant
#   bash calibration/run_device.sh h200moemla  # one H200: fused_moe and TRITON_MLA Triton kernels
#   bash calibration/run_device.sh h200memory  # one H200: CUDA's capacity, context, non-torch memory
#   bash calibration/run_device.sh comm     # every GPU of an H200 host (2, 4 or 8): all-reduce at
#                                           # TP 2..n, all-to-all at EP 2..n, send/recv 0->1
# Writes the CSVs and log_<kind>.txt to $OUT (default calibration/data). Each sweep is bounded
# by its --budget-s (seconds) so the whole call stays under ten minutes; rows are flushed one by
# one, so a sweep cut short still leaves its CSV.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${OUT:-calibration/data}")
mkdir -p "$OUT"
# NVLink multicast off everywhere (device README: it can take a shared host's GPUs down).
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
log="$OUT/log_$1.txt"
q=index,name,driver_version,memory.total,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,power.limit,temperature.gpu

facts() {
  date -u
  nvidia-smi --query-gpu=$q --format=csv
}

{ facts; nvidia-smi topo -m; python3 -c 'import torch; print("torch", torch.__version__,
  "cuda", torch.version.cuda, "gpus", torch.cuda.device_count(), "nccl", torch.cuda.nccl.version())'
} 2>&1 | tee -a "$log"

case "$1" in
  h100)
    python3 calibration/measure_bandwidth.py --out-dir "$OUT" --budget-s 30 2>&1 | tee -a "$log"
    python3 calibration/measure_steps.py --out-dir "$OUT" --budget-s 300 2>&1 | tee -a "$log"
    python3 calibration/measure_attention.py --out-dir "$OUT" --budget-s 80 2>&1 | tee -a "$log"
    ;;
  h200)
    python3 calibration/measure_bandwidth.py --out-dir "$OUT" --budget-s 30 2>&1 | tee -a "$log"
    python3 calibration/measure_steps.py --out-dir "$OUT" --budget-s 330 2>&1 | tee -a "$log"
    python3 calibration/measure_attention.py --out-dir "$OUT" --budget-s 50 2>&1 | tee -a "$log"
    ;;
  h200x4)
    torchrun --nproc-per-node 4 calibration/measure_allreduce.py --out-dir "$OUT" \
      --prefix h200x4 2>&1 | tee -a "$log"
    torchrun --nproc-per-node 4 calibration/measure_steps.py --out-dir "$OUT" \
      --models llama3_70b --decode-batches 1,8,32,128 --decode-ctx 1024,4096 \
      --prefill 1x1024,1x4096 --prefix h200x4_llama70b_tp4 --budget-s 240 2>&1 | tee -a "$log"
    ;;
  h200fp8)
    # scripts run from calibration/ (or a copy of it): they import each other by file name
    (cd calibration && python3 measure_fp8_kernels.py --out-dir "$OUT" --parts attention \
      --attention-budget-s 130 2>&1 | tee -a "$log")
    (cd calibration && python3 measure_fp8_steps.py --out-dir "$OUT" --budget-s 200 2>&1 | tee -a "$log")
    (cd calibration && python3 measure_fp8_kernels.py --out-dir "$OUT" --parts gemm \
      --gemm-budget-s 110 2>&1 | tee -a "$log")
    ;;
  h200fp8f16)
    # second call: the fp16-product variant of the FP8 attention kernel, alone and in steps
    (cd calibration && python3 measure_fp8_kernels.py --out-dir "$OUT" --parts attention \
      --kernels fp8_f16 --suffix _f16 --attention-budget-s 100 2>&1 | tee -a "$log")
    (cd calibration && python3 measure_fp8_steps.py --out-dir "$OUT" --precisions fp8_kv,bf16_kv8 \
      --f16-attention --suffix _f16 --budget-s 120 2>&1 | tee -a "$log")
    ;;
  h200moemla)
    (cd calibration && python3 measure_fused_moe_mla.py --out-dir "$OUT" --prefix h200 \
      --budget-s 380 2>&1 | tee -a "$log")
    (cd calibration && python3 measure_fused_moe_mla.py --out-dir "$OUT" --prefix h200 \
      --only mla_mixed --budget-s 120 2>&1 | tee -a "$log")
    (cd calibration && python3 measure_fused_moe_mla.py --out-dir "$OUT" --prefix h200_seed1 \
      --only moe --seed 1 --budget-s 200 2>&1 | tee -a "$log")
    (cd calibration && python3 measure_fused_moe_mla.py --out-dir "$OUT" --prefix h200 \
      --only moe_holdout --budget-s 240 2>&1 | tee -a "$log")
    ;;
  h200memory)
    python3 calibration/measure_memory.py --out-dir "$OUT" --prefix h200 2>&1 | tee -a "$log"
    ;;
  comm)
    n=$(nvidia-smi -L | wc -l)
    sizes=$(python3 -c "print(','.join(str(2**k) for k in range(1, $n.bit_length()) if 2**k <= $n))")
    (cd calibration && torchrun --nproc-per-node "$n" measure_allreduce.py --out-dir "$OUT" \
      --prefix "h200x$n" --tp "$sizes" 2>&1 | tee -a "$log")
    (cd calibration && torchrun --nproc-per-node "$n" measure_alltoall.py --out-dir "$OUT" \
      --prefix "h200x$n" --ep "$sizes" 2>&1 | tee -a "$log")
    (cd calibration && torchrun --nproc-per-node 2 measure_p2p.py --out-dir "$OUT" \
      --prefix "h200x$n" 2>&1 | tee -a "$log")
    ;;
  *)
    echo "usage: $0 h100|h200|h200x4|h200fp8|h200fp8f16|h200moemla|h200memory|comm" >&2
    exit 2
    ;;
esac
facts 2>&1 | tee -a "$log"
