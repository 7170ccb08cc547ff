#!/usr/bin/env bash
# Session 5: the streaming `linear` kernel for the block GEMMs (v1 at b17e5fb: split-K through a
# global workspace and counters; v2: split-K across a thread-block cluster, reduced in shared memory).
#   bash bench/gpu/linear_s5.sh a   # build; kernel tests; micro-benchmark vs cuBLAS; A/B d16 B1/B32 in one run
#   bash bench/gpu/linear_s5.sh b   # A/B d24 B1/B32 in one run
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}; L="$OUT/logs"; mkdir -p "$L"
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$L/pip.log" 2>&1 || tail -5 "$L/pip.log"
if [ "${1:-a}" = a ]; then
  python3 -c "import flexvar.kernels as K; print('kernels built:', K.load())" 2>&1 | tail -1
  timeout 150 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -k "linear or low_precision or fp32_greedy" \
    > "$L/gpu_tests.log" 2>&1
  rc=$?; echo "gpu tests rc=$rc"; grep -E "passed|failed|Error|assert" "$L/gpu_tests.log" | tail -12
  [ $rc -eq 0 ] || { tar czf "$OUT/logs_a.tgz" -C "$OUT" logs; exit 1; }
  timeout 120 python3 -m flexvar.bench.linear_small --out "$OUT/linear_small.json" 2>&1 | grep "^linear_small"
  timeout 250 flexvar bench --dtype fp16 --depths 16 --batches 1,32 --schedules 256-10 --impls fast,fast-gemm \
    --repeat 7 --no-breakdown --out "$OUT/ab_linear_d16.json" 2>&1 | grep -E "^bench: ran|^\|"
else
  timeout 300 flexvar bench --dtype fp16 --depths 24 --batches 1,32 --schedules 256-10 --impls fast,fast-gemm \
    --repeat 7 --no-breakdown --out "$OUT/ab_linear_d24.json" 2>&1 | grep -E "^bench: ran|^\|"
fi
tar czf "$OUT/logs_${1:-a}.tgz" -C "$OUT" logs && rm -rf "$L"
