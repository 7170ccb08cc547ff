#!/usr/bin/env bash
# Next session's device calls, written in session 23 (bench/NOTES.md, "Session 23"). None has run yet.
#   bash bench/gpu/s23.sh a  # one 600 s call: the head-major KV cache (session 23, off by default) - its GPU tests,
#                           # attend_step per step on both cache layouts (attn_backends step against step-hm), and
#                           # batch 32 end to end: fast (L2_ORDER on) against fast-gnil (off) and fast-kvhm, alternated
#                           # in one process; then the batch-32 graph replay's profile (last: session 12)
#   bash bench/gpu/s23.sh s  # the README's schedule table on the current runtime (last: session 14's): d16 at 256 px,
#                           # 6-13 steps, batch 1-64; 384-11, 512-12 and 1:2 at batch 1 and 32 (eager and fast)
#   bash bench/gpu/s23.sh f  # final_runs (d16 and d24 256-10, eager and fast, bench.precision: since session 23 with
#                           # the step-1 agreement over all 1,000 classes, the bf16 target)
#   bash bench/gpu/s23.sh t  # the GPU tests session 23 did not run: attend_step's, the runtime's Triton attention,
#                           # the taps kernel and the decoder with the GroupNorm op, then the sampling kernels'
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}
export PYTHONUNBUFFERED=1
. bench/gpu/setup.sh
case "${1:-a}" in
a)
  gpu_tests hm 110 "head_major"
  (cd /tmp && timeout 70 python3 -m flexvar.bench.attn_backends --batches 32,1 --backends step,step-hm 2>&1 \
    | grep -v Warn | tee "$OUT/attn_layout.log")
  bench_ab kvhm_d16_b32 200 --depths 16 --batches 32 --impls fast-gnil,fast,fast-kvhm,fast-gnil,fast,fast-kvhm \
    --repeat 9 --no-breakdown
  (cd /tmp && timeout 130 python3 -m flexvar.bench.profile_fast --depth d16 --batch 32 --graph --decode-kernels \
    --rows 45 --timeline "$OUT/timeline_b32.json" 2>&1 | grep -vE "Warning|warn_once|^-|^$" > "$OUT/profile_b32.txt")
  head -3 "$OUT/profile_b32.txt"; grep -E "^step|^decode" "$OUT/profile_b32.txt" ;;
s)
  schedule_tables ;;
f)
  final_runs 1 ;;
t)
  gpu_tests attn_step 200 "attend_step_kernel or triton_attention or taps or fast_decoder_group_norm_op"
  gpu_tests sample 350 "guided_sample" ;;
esac
save_lt_algos
exit 0
