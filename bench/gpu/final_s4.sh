#!/usr/bin/env bash
# Session 4, final measurements, two device calls on one warm machine:
#   bash bench/gpu/final_s4.sh a   # GPU tests; A/B of the attention backend order; d16 256 px matrix
#   bash bench/gpu/final_s4.sh b   # d16 384/512/1:2, d20/d24, and 256-13 at batch 32/64 (a's run timed out
#                                  # before them), eager and fast, one run each
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}; L="$OUT/logs"; mkdir -p "$L"
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$L/pip.log" 2>&1 || tail -5 "$L/pip.log"
if [ "${1:-a}" = a ]; then
  python3 -c "import flexvar.kernels as K; print('kernels built:', K.load())" 2>&1 | tail -1
  timeout 200 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$L/gpu_tests.log" | tail -6
  timeout 120 python3 bench/gpu/ab_sdpa_order.py 2>&1 | grep "^ab_sdpa"
  timeout 240 flexvar bench --dtype fp16 --depths 16 --batches 1,8,32,64 \
    --schedules '256-6;256-7;256-8;256-9;256-10;256-11;256-12;256-13' --impls eager,fast --repeat 5 --no-breakdown \
    --out "$OUT/d16_256.json" 2>&1 | grep -E "^bench: ran|^\|"
else
  timeout 250 flexvar bench --dtype fp16 --depths 16 --batches 1,32 \
    --schedules '384-11;512-12;1x2,2x4,3x6,4x8,5x10,6x12,8x16,10x20,13x26,16x32' --impls eager,fast --repeat 5 \
    --no-breakdown --out "$OUT/d16_res.json" 2>&1 | grep -E "^bench: ran|^\|"
  timeout 200 flexvar bench --dtype fp16 --depths 20,24 --batches 1,32 --schedules 256-10 --impls eager,fast \
    --repeat 5 --no-breakdown --out "$OUT/d20_d24.json" 2>&1 | grep -E "^bench: ran|^\|"
  timeout 100 flexvar bench --dtype fp16 --depths 16 --batches 32,64 --schedules 256-13 --impls eager,fast \
    --repeat 5 --no-breakdown --out "$OUT/d16_256_13.json" 2>&1 | grep -E "^bench: ran|^\|"
fi
tar czf "$OUT/logs_${1:-a}.tgz" -C "$OUT" logs && rm -rf "$L"
