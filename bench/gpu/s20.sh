#!/usr/bin/env bash
# Session 20 device calls (bench/NOTES.md, "Session 20"). old/ is session 18's tree
# (`mkdir old && git archive a421ec0 flexvar kernels bench export engines | tar -x -C old`), carried untracked (`carry`)
# for the A/B in one call; delete it before committing.
# What ran (results under bench/results/2026-12-07_h100_*_s20.*): a (tree before `attend_config`'s 17-32-token
# configuration; each test part cut at its time limit, none failed), then on a second machine t, g and the taps A/B
# (`bench_ab taps_d16_b32 150 --depths 16 --batches 32 --impls fast-notaps,fast,fast-notaps,fast,fast-notaps,fast
# --repeat 15 --no-breakdown`, run as a command of its own after `. bench/gpu/setup.sh`). b and c did not run (device
# time spent).
#   bash bench/gpu/s20.sh a  # session 19's attention kernels on the GPU: attend_step's and the runtime's Triton
#                           # attention tests; attend_step against session 18's per step at batch 32 and 1; the
#                           # decoder's end as group_norm_silu_taps: its tests, then the decode probe (taps or not,
#                           # in chunks of images: bench/gpu/decode_chunk_probe.py)
#   bash bench/gpu/s20.sh b  # a configuration sweep of attention steps 3-6; d16 256-10 batch 32, fast-notaps against
#                           # fast, alternated in one process; the `attend` kernel's tests
#   bash bench/gpu/s20.sh t  # what a's two test runs had left at their time limits (the bf16 attend_step cases, the
#                           # runtime's Triton attention tests, the decoder test with the taps), after attend_config
#                           # took (64, 32, 4, 2) for 17-32 tokens
#   bash bench/gpu/s20.sh c  # d16 256-10 batch 32 end to end, this tree against old/ (fast, one process each)
#   bash bench/gpu/s20.sh g  # final_runs with d24 at batch 1 (d16 and d24 256-10, eager and fast, bench.precision)
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}
export PYTHONUNBUFFERED=1
. bench/gpu/setup.sh
attn_bench() {  # attn_bench NAME SECONDS ARGS...: flexvar.bench.attn_backends: $OUT/attn_NAME.log
  local name=$1 limit=$2; shift 2
  (cd /tmp && timeout "$limit" python3 -m flexvar.bench.attn_backends "$@" 2>&1 | grep -v Warn | tee "$OUT/attn_$name.log")
}
SWEEP="16,32,4,2;32,32,4,2;64,32,4,2;64,32,4,3;64,64,4,3;32,64,4,3"
case "${1:-a}" in
a)
  gpu_tests attn_step 130 "attend_step_kernel or triton_attention"
  attn_bench b32 50 --batches 32 --backends step,step-old --old-kernels "$PWD/old/kernels"
  attn_bench b1 30 --batches 1 --backends step,step-old --old-kernels "$PWD/old/kernels"
  gpu_tests taps 90 "group_norm_silu_taps or fast_decoder_group_norm_op"
  (cd /tmp && timeout 170 python3 "$OLDPWD/bench/gpu/decode_chunk_probe.py" 2>&1 | grep -v Warn \
    | tee "$OUT/decode_chunk.log") ;;
b)
  attn_bench sweep 70 --batches 1,32 --backends step --sweep --sweep-steps 3,4,5,6 --sweep-configs "$SWEEP"
  bench_ab taps_d16_b32 200 --depths 16 --batches 32 --impls fast-notaps,fast,fast-notaps,fast --repeat 9
  gpu_tests attn_kernel 90 "attention_kernel" ;;
c)
  ab d16_b32 --depths 16 --batches 32 ;;
t)
  gpu_tests attn_step2 250 "(dtype1 and attend_step_kernel) or triton_attention"
  gpu_tests taps2 110 "fast_decoder_group_norm_op" ;;
g)
  final_runs 1 ;;
esac
save_lt_algos
exit 0
