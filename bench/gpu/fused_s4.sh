#!/usr/bin/env bash
# Session 4, fused attention prologue (kernels/src/qk_norm_cache.cu + flash attention on the cache's
# views + the second half compiled together with the next block's projection), in two device calls
# on one warm machine:
#   bash bench/gpu/fused_s4.sh a   # build, GPU tests, fp16 d16 A/B against the single compiled block step
#   bash bench/gpu/fused_s4.sh b   # kernel profiles (batch 1, 32), d24 batch 1, bf16/fp16 agreement
# Ran at commit 9f7040a. The single compiled block step (variant fast-blockstep) was removed after this
# A/B, so the fast-blockstep rows only run at that commit.
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}; L="$OUT/logs"; mkdir -p "$L"
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$L/pip.log" 2>&1 || tail -5 "$L/pip.log"
if [ "${1:-a}" = a ]; then
  python3 -c "import flexvar.kernels as K; print('kernels built:', K.load())" 2>&1 | tail -1
  timeout 260 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$L/gpu_tests.log" | tail -6
  timeout 280 flexvar bench --dtype fp16 --depths 16 --batches 1,32 --schedules 256-10 \
    --impls eager,fast,fast-blockstep --repeat 10 --out "$OUT/ab_fp16_d16.json" 2>&1 | grep -E "^bench|^\|" | tail -12
else
  for B in 1 32; do
    timeout 150 python3 -m flexvar.bench.profile_fast --graph --batch $B --rows 30 > "$OUT/profile_b$B.txt" 2>&1
    head -3 "$OUT/profile_b$B.txt" | tail -2
  done
  timeout 200 flexvar bench --dtype fp16 --depths 24 --batches 1 --schedules 256-10 --impls fast,fast-blockstep \
    --repeat 10 --no-breakdown --out "$OUT/ab_fp16_d24.json" 2>&1 | grep -E "^bench|^\|" | tail -6
  timeout 200 python3 -m flexvar.bench.precision --depth d16 --batch 16 --dtypes bf16,fp16 \
    --out "$OUT/precision_fast.json" 2>&1 | grep -E "^precision|Error" | tail -4
fi
tar czf "$OUT/logs_${1:-a}.tgz" -C "$OUT" logs && rm -rf "$L"
