#!/usr/bin/env bash
# Fit the committed hardware profiles from calibration/data/ and record their validation
# (the stated uncertainty of calibrated and transferred runs). Run from the repository root:
#   bash calibration/fit_profiles.sh
set -euo pipefail
D=calibration/data P=sim/data/profiles V=analysis/validate_step_model.py
python -m sim.calibrate.profile_fit --hardware h100_sxm --ops $D/h100_sxm_ops.csv \
  --gemm-sweep $D/h100_sxm_gemm.csv --allreduce $D/h200x4_allreduce.csv --out $P/h100_sxm.json >/dev/null
python -m sim.calibrate.profile_fit --hardware h200 --ops $D/h200_ops.csv \
  --gemm-sweep $D/h200_fp8_gemm.csv --allreduce $D/h200x4_allreduce.csv \
  --fp8-attention $D/h200_fp8_attention.csv --out $P/h200.json >/dev/null
# fused_moe and MLA-decode curves (profile_fit keeps only its own keys and `engine`)
python -m sim.calibrate.moe_mla_fit --hardware h200 --moe $D/h200_fused_moe.csv \
  --mla $D/h200_mla_triton.csv --write $P/h200.json >/dev/null
# own: each profile on its own GPU's whole steps; transfer: on the other Hopper GPU's steps
python $V $D/h100_sxm_steps.csv --record $P/h100_sxm.json own
python $V $D/h200_steps.csv --override cost.profile=h100_sxm --record $P/h100_sxm.json transfer
python $V $D/h200_steps.csv $D/h200_fp8_steps.csv --record $P/h200.json own
python $V $D/h100_sxm_steps.csv --override cost.profile=h200 --record $P/h200.json transfer
