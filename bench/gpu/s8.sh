#!/usr/bin/env bash
# Session 8 device calls.
#   bash bench/gpu/s8.sh k   # small_step v5 (LayerNorms folded into the GEMMs): its GPU tests, the probe, d16/d24 B1
#   bash bench/gpu/s8.sh l   # A/B small_step v4 (.ab/small_step_v4.cu, the session-7 kernel) against v5, same machine
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}; L="$OUT/logs"; mkdir -p "$L"
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$L/pip.log" 2>&1 || tail -5 "$L/pip.log"
python3 -c "import flexvar.kernels as K; print('kernels built:', K.load())" 2>&1 | tail -3
bench_b1() {  # $1: output name; d16 and d24 at batch 1, fast only
  timeout 200 flexvar bench --dtype fp16 --depths 16,24 --batches 1 --schedules 256-10 --impls fast --repeat 9 \
    --no-breakdown --out "$OUT/$1.json" 2>&1 | grep -E "^\| d|rror"
}
if [ "${1:-k}" = k ]; then
  timeout 240 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider \
    -k "small_step or low_precision or graph_replay or fp32_greedy" > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error|error" "$L/gpu_tests.log" | tail -12
  nvcc -O3 -std=c++17 -Ikernels/include -gencode=arch=compute_90,code=sm_90 bench/gpu/small_step_probe.cu \
    -o /tmp/small_step_probe && timeout 60 /tmp/small_step_probe | tee "$OUT/small_step_probe_v5.log"
elif [ "$1" = l ]; then
  cp kernels/src/small_step.cu /tmp/v5.cu && cp .ab/small_step_v4.cu kernels/src/small_step.cu
  FLEXVAR_KERNELS_CACHE=/tmp/kc4 python3 -c "import flexvar.kernels as K; print('v4 built:', K.load())" 2>&1 | tail -1
  cp /tmp/v5.cu kernels/src/small_step.cu
  for v in v4 v5; do
    echo "== $v"
    if [ $v = v4 ]; then FLEXVAR_KERNELS_LIB=/tmp/kc4/flexvar_kernels_ext.so bench_b1 ab_${v}_b1_$RANDOM; else bench_b1 ab_${v}_b1_$RANDOM; fi
  done
fi
