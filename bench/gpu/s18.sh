#!/usr/bin/env bash
# Session 18 device calls. Only m ran (one machine start of about fifteen requests); a, b, p, c and f are the next
# session's, on this session's code; a first (its sampling tests cover the sort the review merged without a GPU).
#   bash bench/gpu/s18.sh a  # the many-rows sampling kernel: the guided_sample GPU tests through each kernel, the probe
#                           # by kernel (bench/gpu/sample_probe.py); then session 17's review code (ae49236) on the GPU:
#                           # the decoder's GPU tests and the runtime's graph-replay, low-precision and 256-10 ones
#   bash bench/gpu/s18.sh b  # d16 256-10 batch 32, one process, alternated: eager, fast-sblock (sampling through the
#                           # one-block-per-row kernels: session 17's runtime), fast; then part p
#   bash bench/gpu/s18.sh m  # (ran) a's sampling tests and probe, b's A/B, then what time is left of a's other tests (one
#                           # call, as machines were scarce; 4 of those 6 tests passed before its time limit)
#   bash bench/gpu/s18.sh p  # the batch-32 graph replay's kernels by name, its decode's kernels, its per-step timeline
#   bash bench/gpu/s18.sh c  # every test of tests/test_gpu.py but those a ran
#   bash bench/gpu/s18.sh f  # final_runs (d16 and d24 256-10, eager and fast, bench.precision)
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}
export PYTHONUNBUFFERED=1
. bench/gpu/setup.sh
profile_b32() {
  (cd /tmp && timeout 200 python3 -m flexvar.bench.profile_fast --depth d16 --batch 32 --graph --decode-kernels \
    --rows 45 --timeline "$OUT/timeline_b32.json" 2>&1 | grep -vE "Warning|warn_once|^-|^$" > "$OUT/profile_b32.txt")
  head -3 "$OUT/profile_b32.txt"; grep -E "^step|^decode" "$OUT/profile_b32.txt"
}
A_TESTS="guided_sample or folded or upsample or group_norm or graph_replay or low_precision or 256-10"
case "${1:-a}" in
a)
  gpu_tests sample 170 "guided_sample"
  timeout 80 python3 bench/gpu/sample_probe.py 2>&1 | tee "$OUT/sample_probe.log" | grep -v Warn
  gpu_tests a 250 "folded or upsample or group_norm or graph_replay or low_precision or 256-10" ;;
b)
  bench_ab sample_d16_b32 150 --depths 16 --batches 32 --impls eager,fast-sblock,fast,fast-sblock,fast --repeat 11
  profile_b32 ;;
m)
  gpu_tests sample 110 "guided_sample"
  timeout 50 python3 bench/gpu/sample_probe.py 2>&1 | tee "$OUT/sample_probe.log" | grep -v Warn
  bench_ab sample_d16_b32 150 --depths 16 --batches 32 --impls eager,fast-sblock,fast,fast-sblock,fast --repeat 9
  gpu_tests a 170 "graph_replay or low_precision or 256-10 or group_norm_op" ;;
p)
  profile_b32 ;;
c)
  gpu_tests c 560 "not ($A_TESTS)" ;;
f)
  final_runs ;;
esac
save_lt_algos
exit 0
