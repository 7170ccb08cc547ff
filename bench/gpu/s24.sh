#!/usr/bin/env bash
# Session 24's device calls (bench/NOTES.md, "Session 24"). Ran: `h` once on an H100 (tree 9e859a8), cut at the
# 237 s the session had left after its first command (bench.precision). Session 25 ran `a` on an H100 (tree c4aae24;
# its GPU tests were cut at their 150 s after 26 passed and 2 failed) and `schedule_tables` (the first half of `b`).
#   bash bench/gpu/s24.sh a  # one 600 s call: the final runs (d16 batch 1 and 32, d24 batch 1, eager in the same runs;
#                           # bench.precision with the step-1 agreement over all 1,000 classes); the GPU tests of what
#                           # sessions 23-24 added (attend_step's write_cache, the head-major cache, the last step's
#                           # skipped cache writes, the float32 first-step table); then batch 32 end to end with the
#                           # last step's cache writes (lastkv), without them (the default) and with the head-major
#                           # cache, alternated in one process
#   bash bench/gpu/s24.sh h  # short of device time, or where only an H200 comes: call a without the final runs
#                           # (bench.precision alone, first)
#   bash bench/gpu/s24.sh w  # bench.precision with bf16w (float32 arithmetic on bf16-rounded weights) beside bf16:
#                           # whether session 24's 98.8 % bf16 step-1 agreement is the GPU weights' rounding ceiling
#   bash bench/gpu/s24.sh b  # the README's schedule table on the current runtime (last: session 14's), then the
#                           # batch-32 graph replay's profile (last: session 12)
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}
export PYTHONUNBUFFERED=1
. bench/gpu/setup.sh
case "${1:-a}" in
a)
  final_runs 1
  gpu_tests new 150 "attend_step_kernel or head_major or last_step_kv or first_step"
  bench_ab lastkv_d16_b32 150 --depths 16 --batches 32 \
    --impls fast-lastkv,fast,fast-kvhm,fast-lastkv,fast,fast-kvhm --repeat 9 --no-breakdown ;;
h)  # short of device time or on an H200: call a without the final runs, bench.precision first
  timeout 150 python3 -m flexvar.bench.precision --depth d16 --batch 8 --dtypes bf16,fp16 \
    --out "$OUT/precision_d16.json" 2>&1 | tail -4
  bench_ab lastkv_d16_b32 120 --depths 16 --batches 32 --impls fast-lastkv,fast,fast-lastkv,fast --repeat 9 \
    --no-breakdown
  gpu_tests new 150 "last_step_kv or first_step or attend_step_kernel" ;;
w)  # the bf16-rounded weights' own step-1 ceiling on the GPU's random weights (float32 arithmetic), beside bf16
  timeout 200 python3 -m flexvar.bench.precision --depth d16 --batch 8 --dtypes bf16w,bf16 \
    --out "$OUT/precision_bf16w_d16.json" 2>&1 | tail -4 ;;
b)
  schedule_tables
  (cd /tmp && timeout 130 python3 -m flexvar.bench.profile_fast --depth d16 --batch 32 --graph --decode-kernels \
    --rows 45 --timeline "$OUT/timeline_b32.json" 2>&1 | grep -vE "Warning|warn_once|^-|^$" > "$OUT/profile_b32.txt")
  head -3 "$OUT/profile_b32.txt"; grep -E "^step|^decode" "$OUT/profile_b32.txt" ;;
esac
save_lt_algos
exit 0
