#!/usr/bin/env bash
# Session 19 device calls: the attention kernels' inner loop (bench/NOTES.md, "Session 19"). old/ is session 18's tree
# (`mkdir old && git archive a421ec0 flexvar kernels bench export engines | tar -x -C old`), carried untracked (`carry`)
# for the A/B in one process; delete it before committing.
# What ran (results under bench/results/2026-12-07_*_s19.*):
#   call a (H200), on a tree with whole-block loops + masked tails and an FLEXVAR_ATTN_EXP16 switch (fp16
#     exponentials, backend `step16` then): the attention GPU tests (24 passed before the time limit), attend_step
#     against session 18's at batch 1 and 32, the start of a sweep, session 18's sampling GPU tests (92 passed);
#   call b (H100), part b below on single masked loops with the fp16 exponentials on by default (backend `step32` then:
#     FLEXVAR_ATTN_EXP16=0, the kernel committed); the attend_step tests' log did not come back (time limit);
#   call c (same H100): `FLEXVAR_ATTN_EXP16=0`, the attend_step GPU tests and the step-5 sweep at batch 1 and 32
#     (command in `..._h100_attn_step_exp32_s19.log`).
# The fp16 exponentials were removed after call b, so part b now times `step` (the committed kernel) against `step-old`.
#   bash bench/gpu/s19.sh b  # attend_step's GPU tests; attend_step against session 18's per step at batch 32 and 1;
#                           # d16 256-10 batch 32 end to end, this tree against old/ (fast, one process each); attend's
#                           # GPU tests; a configuration sweep of steps 5-8 at batch 32
#   bash bench/gpu/s19.sh c  # every test of tests/test_gpu.py but the attention and sampling ones
#   bash bench/gpu/s19.sh f  # final_runs (d16 and d24 256-10, eager and fast, bench.precision)
#   bash bench/gpu/s19.sh g  # final_runs with d24 at batch 1 only (fits one call)
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}
export PYTHONUNBUFFERED=1
. bench/gpu/setup.sh
ATTN_TESTS="attention_kernel or attend_step_kernel or triton_attention"
attn_bench() {  # attn_bench NAME SECONDS ARGS...: flexvar.bench.attn_backends: $OUT/attn_NAME.log
  local name=$1 limit=$2; shift 2
  (cd /tmp && timeout "$limit" python3 -m flexvar.bench.attn_backends "$@" 2>&1 | grep -v Warn | tee "$OUT/attn_$name.log")
}
case "${1:-b}" in
b)
  gpu_tests attn_step 120 "attend_step_kernel or triton_attention"
  attn_bench b32 50 --batches 32 --backends step,step-old --old-kernels "$PWD/old/kernels"
  attn_bench b1 30 --batches 1 --backends step,step-old --old-kernels "$PWD/old/kernels"
  ab d16_b32 --depths 16 --batches 32
  gpu_tests attn_kernel 90 "attention_kernel"
  attn_bench sweep32 60 --batches 32 --backends step --sweep --sweep-steps 5,6,7,8 \
    --sweep-configs "64,64,4,3;64,32,4,2;64,32,4,3;32,32,4,2;32,64,4,3;128,64,8,3" ;;
c)
  gpu_tests c 560 "not ($ATTN_TESTS or guided_sample)" ;;
f)
  final_runs ;;
g)
  final_runs 1 ;;
esac
save_lt_algos
exit 0
