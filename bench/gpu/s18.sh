#!/usr/bin/env bash
# Session 18 device calls. Only m ran (one machine start of about a dozen requests); a, b, p, c and f are the next
# session's, on this session's code.
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
bench_ab() {  # bench_ab NAME SECONDS ARGS...: 256-10, fp16, with the stage breakdown, one process
  local name=$1 limit=$2; shift 2
  (cd /tmp && timeout "$limit" python3 -m flexvar bench --dtype fp16 --schedules 256-10 "$@" --out "$OUT/${name}.json" \
    2>&1 | grep -E "^bench: ran|^\||rror")
}
profile_b32() {
  (cd /tmp && timeout 200 python3 -m flexvar.bench.profile_fast --depth d16 --batch 32 --graph --decode-kernels \
    --rows 45 --timeline "$OUT/timeline_b32.json" 2>&1 | grep -vE "Warning|warn_once|^-|^$" > "$OUT/profile_b32.txt")
  head -3 "$OUT/profile_b32.txt"; grep -E "^step|^decode" "$OUT/profile_b32.txt"
}
A_TESTS="guided_sample or folded or upsample or group_norm or graph_replay or low_precision or 256-10"
case "${1:-a}" in
a)
  timeout 170 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -k "guided_sample" \
    > "$OUT/gpu_tests_sample.log" 2>&1
  echo "sample tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_sample.log" | tail -8
  timeout 80 python3 bench/gpu/sample_probe.py 2>&1 | tee "$OUT/sample_probe.log" | grep -v Warn
  timeout 250 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider \
    -k "folded or upsample or group_norm or graph_replay or low_precision or 256-10" > "$OUT/gpu_tests_a.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_a.log" | tail -8 ;;
b)
  bench_ab sample_d16_b32 150 --depths 16 --batches 32 --impls eager,fast-sblock,fast,fast-sblock,fast --repeat 11
  profile_b32 ;;
m)
  timeout 110 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -k "guided_sample" \
    > "$OUT/gpu_tests_sample.log" 2>&1
  echo "sample tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_sample.log" | tail -8
  timeout 50 python3 bench/gpu/sample_probe.py 2>&1 | tee "$OUT/sample_probe.log" | grep -v Warn
  bench_ab sample_d16_b32 150 --depths 16 --batches 32 --impls eager,fast-sblock,fast,fast-sblock,fast --repeat 9
  timeout 170 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider \
    -k "graph_replay or low_precision or 256-10 or group_norm_op" > "$OUT/gpu_tests_a.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_a.log" | tail -8 ;;
p)
  profile_b32 ;;
c)
  timeout 560 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -k "not ($A_TESTS)" \
    > "$OUT/gpu_tests_c.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_c.log" | tail -8 ;;
f)
  final_runs ;;
esac
cp "${FLEXVAR_KERNELS_CACHE:-$HOME/.cache/flexvar/kernels}/lt_algos.json" "$OUT/lt_algos.json" 2>/dev/null
exit 0
