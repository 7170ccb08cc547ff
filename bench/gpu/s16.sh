#!/usr/bin/env bash
# Session 16 device calls: the block GEMMs through cuBLASLt with each shape's algorithm tuned (`lt_linear`).
#   bash bench/gpu/s16.sh a   # the cuBLASLt extension built; its GPU tests with the greedy, graph-replay, low-precision,
#                            # skinny and first-step ones; d24 batch 1: eager, fast-nolt, fast, fast-nolt, fast in one process
#   bash bench/gpu/s16.sh b   # d16 256-10 at batch 1 and 32: eager, fast-nolt, fast, fast-nolt, fast in one process
#   bash bench/gpu/s16.sh cd  # d (first): the tests of tests/test_gpu.py that a did not run; c: d24 batch 1, eager,
#                            # fast-nolt, fast, fast-rows2 (step 2 through the per-block path with the tuned GEMMs and
#                            # split-K, not `small_step`), alternated in one process
# Each run writes the choices it tuned to $OUT/lt_algos.json (the cache file, FLEXVAR_KERNELS_CACHE/lt_algos.json).
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}
. bench/gpu/setup.sh
python3 -c "
import torch, flexvar.kernels.lt_linear as lt
print('lt_linear built:', lt.load(), lt._cublaslt())
print(lt._machine(torch.device('cuda')) if lt.load() else '')" 2>&1 | tail -3
lt_ab() {  # lt_ab NAME ARGS...: eager and the fast runtime with and without tuned cuBLASLt GEMMs, alternated, in one
           # process, 256-10, with the stage breakdown
  local name=$1; shift
  (cd /tmp && timeout 290 python3 -m flexvar bench --dtype fp16 --schedules 256-10 \
    --impls eager,fast-nolt,fast,fast-nolt,fast --repeat 15 "$@" --out "$OUT/lt_${name}.json" 2>&1 \
    | grep -E "^bench: ran|^\||rror")
}
if [ "${1:-a}" = a ]; then
  timeout 280 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -k "lt_ or greedy or graph_replay \
or low_precision or skinny or first_step" > "$OUT/gpu_tests_a.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_a.log" | tail -8
  lt_ab d24 --depths 24 --batches 1
fi
if [ "${1:-a}" = b ]; then
  lt_ab d16 --depths 16 --batches 1,32
fi
if [[ "${1:-a}" == *d* ]]; then
  timeout 300 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -k "not (lt_ or greedy or graph_replay \
or low_precision or skinny or first_step)" > "$OUT/gpu_tests_d.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_d.log" | tail -8
fi
if [[ "${1:-a}" == *c* ]]; then
  (cd /tmp && timeout 180 python3 -m flexvar bench --dtype fp16 --schedules 256-10 --depths 24 --batches 1 \
    --impls eager,fast-nolt,fast,fast-rows2,fast-nolt,fast,fast-rows2 --repeat 15 --out "$OUT/lt_rows_d24.json" 2>&1 \
    | grep -E "^bench: ran|^\||rror")
fi
cp "${FLEXVAR_KERNELS_CACHE:-$HOME/.cache/flexvar/kernels}/lt_algos.json" "$OUT/lt_algos.json" 2>/dev/null
