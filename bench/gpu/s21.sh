#!/usr/bin/env bash
# Next session's device calls (written in session 20, not run yet): where batch 32's remaining ~3.5 ms to 500 img/s
# could come from (bench/NOTES.md, "Session 20", next steps).
#   bash bench/gpu/s21.sh p  # the batch-32 graph replay's kernels by name, its decode's kernels, its per-step timeline
#                           # (last profiled in session 12); then the GEMM probe (bench/gpu/gemm_template_probe.py):
#                           # each per-block GEMM of steps 5-10 at batch 32, tuned cuBLASLt against Inductor's
#                           # max-autotune at the same fixed shape
#   bash bench/gpu/s21.sh t  # the tests session 20 did not run on its code: the `attend` kernel's, then the rest of
#                           # tests/test_gpu.py but the attention, sampling and GroupNorm-taps ones
#   bash bench/gpu/s21.sh f  # final_runs (d16 and d24 256-10, eager and fast, bench.precision)
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}
export PYTHONUNBUFFERED=1
. bench/gpu/setup.sh
case "${1:-p}" in
p)
  (cd /tmp && timeout 200 python3 -m flexvar.bench.profile_fast --depth d16 --batch 32 --graph --decode-kernels \
    --rows 45 --timeline "$OUT/timeline_b32.json" 2>&1 | grep -vE "Warning|warn_once|^-|^$" > "$OUT/profile_b32.txt")
  head -3 "$OUT/profile_b32.txt"; grep -E "^step|^decode" "$OUT/profile_b32.txt"
  (cd /tmp && timeout 330 python3 "$OLDPWD/bench/gpu/gemm_template_probe.py" 2>&1 | grep -vE "Warn|warn" \
    | tee "$OUT/gemm_probe.log") ;;
t)
  gpu_tests attn_kernel 120 "attention_kernel"
  gpu_tests rest 450 "not (attention_kernel or attend_step_kernel or triton_attention or guided_sample or taps)" ;;
f)
  final_runs ;;
esac
save_lt_algos
exit 0
