#!/usr/bin/env bash
# Session 25's next device calls (bench/NOTES.md, "Session 25"). Session 25 itself ran `bash bench/gpu/s24.sh a` and
# the first half of `s24.sh b` (schedule_tables), plus test runs; none of the calls below has run yet (session 26 had
# no device: the loans were paused; its changes add one test to `t` and the C++ host's seed folding to `e`).
#   bash bench/gpu/s25.sh a  # one ~400 s call: the Pipeline test that failed in session 25 (its decode's GroupNorm
#                           # layout, fixed after the call); gn_fallback_probe.py (which decodes take the GroupNorm
#                           # ops' reference path, and why); the batch-32 graph replay's kernel profile (last:
#                           # session 12), with each step's kernel time against its floors (--floors, session 26)
#   bash bench/gpu/s25.sh t  # the whole of tests/test_gpu_decoder.py and tests/test_gpu_runtime.py
#   bash bench/gpu/s25.sh e  # the C++ host and the exported engines on CUDA (last: sessions 13-14); carry
#                           # onnxruntime-gpu first (../shared/hooks/gpu-wheels.sh onnxruntime-gpu==1.31.1)
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}
export PYTHONUNBUFFERED=1
. bench/gpu/setup.sh
case "${1:-a}" in
a)
  timeout 150 python3 -m pytest -m gpu tests/test_gpu_runtime.py -q -p no:cacheprovider -p no:logging --tb=short \
    -k "first_step_from_float32" > "$OUT/gpu_tests_pipeline_table.log" 2>&1
  echo "pipeline table test rc=$?"; grep -E "^E |passed|failed" "$OUT/gpu_tests_pipeline_table.log" | head -12
  (cd /tmp && timeout 130 python3 -m flexvar.bench.profile_fast --depth d16 --batch 32 --graph --decode-kernels \
    --rows 45 --floors --timeline "$OUT/timeline_b32.json" 2>&1 | grep -vE "Warning|warn_once|^-|^$" \
    > "$OUT/profile_b32.txt")
  timeout 120 python3 bench/gpu/gn_fallback_probe.py 2>&1 | grep "^gn probe"
  head -3 "$OUT/profile_b32.txt"; grep -E "^floors|^step|^decode" "$OUT/profile_b32.txt" ;;
t)
  GPU_TESTS="tests/test_gpu_decoder.py tests/test_gpu_runtime.py" gpu_tests decoder_runtime 550 "not first_step_from_float32" ;;
e)
  timeout 500 python3 -m pytest -m gpu tests/test_gpu_host.py tests/test_gpu_engines.py -q -p no:cacheprovider \
    -p no:logging --tb=short > "$OUT/gpu_tests_host_engines.log" 2>&1
  echo "host/engine tests rc=$?"; grep -E "^E |passed|failed|skipped" "$OUT/gpu_tests_host_engines.log" | tail -12 ;;
esac
save_lt_algos
exit 0
