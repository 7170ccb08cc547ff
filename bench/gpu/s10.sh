#!/usr/bin/env bash
# Session 10 device calls.
#   bash bench/gpu/s10.sh a   # the L2 prefetch op and the GroupNorm statistics kernel: their GPU tests; d16 batch 1
#                            # with the prefetch off / in line (32 MiB) / on a second stream / 48 MiB, one run
#   bash bench/gpu/s10.sh b   # batch 32 A/B against the previous runtime (a38f374, carried as old/); d24 batch 1
#                            # with the prefetch off / in line / on a second stream
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}; L="$OUT/logs"; mkdir -p "$L"
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$L/pip.log" 2>&1 || tail -5 "$L/pip.log"
python3 -c "import flexvar.kernels as K; print('kernels built:', K.load())" 2>&1 | tail -3
oldpkg() {
  rm -rf /tmp/oldpkg && mkdir -p /tmp/oldpkg/flexvar && cp -r old/flexvar/* /tmp/oldpkg/flexvar/ \
    && for d in kernels bench export engines; do cp -r old/$d /tmp/oldpkg/flexvar/$d; done
}
if [ "${1:-a}" = a ]; then
  timeout 150 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -x -k "l2_prefetch or group_norm" \
    > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error|error" "$L/gpu_tests.log" | tail -12
  timeout 330 flexvar bench --dtype fp16 --depths 16 --batches 1 --schedules 256-10 \
    --impls fast-pf0,fast,fast-pfside,fast-pf48 --repeat 9 --no-breakdown --out "$OUT/ab_prefetch_d16.json" 2>&1 \
    | grep -E "^bench: ran|^\||rror"
elif [ "$1" = b ]; then
  timeout 170 flexvar bench --dtype fp16 --depths 16 --batches 32 --schedules 256-10 --impls fast,fast-pf0 --repeat 7 \
    --no-breakdown --out "$OUT/ab_b32_d16.json" 2>&1 | grep -E "^bench: ran|^\||rror"
  oldpkg
  (cd /tmp && PYTHONPATH=/tmp/oldpkg timeout 120 python3 -m flexvar bench --dtype fp16 --depths 16 --batches 32 \
    --schedules 256-10 --impls fast --repeat 7 --no-breakdown --out "$OUT/ab_b32_d16_old.json" 2>&1 \
    | grep -E "^bench: ran|^\||rror")
  timeout 200 flexvar bench --dtype fp16 --depths 24 --batches 1 --schedules 256-10 \
    --impls fast-pf0,fast,fast-pfside --repeat 7 --no-breakdown --out "$OUT/ab_prefetch_d24.json" 2>&1 \
    | grep -E "^bench: ran|^\||rror"
fi
