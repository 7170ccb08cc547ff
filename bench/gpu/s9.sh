#!/usr/bin/env bash
# Session 9 device calls.
#   a, b, c ran the Triton block GEMMs (kernels/block_gemm.py, bench/gpu/block_gemm_probe.py; v3 is commit 4b73260,
#   removed in 576b946), so at later commits they fail for want of those files:
#   bash bench/gpu/s9.sh a   # block_gemm v1: its GPU tests, then the per-step probe (paths and tile sweep)
#   bash bench/gpu/s9.sh b   # v2 (parts in one load): tests, each fused GEMM alone vs cuBLAS, the per-step probe
#   bash bench/gpu/s9.sh c   # v3 (ln_linear tiles each image's rows): GPU tests of the touched paths, each GEMM alone
#   bash bench/gpu/s9.sh d   # batch 1 A/B: the head input compiled and one copy for the guided rows (this tree against
#                            # d10d7c2, carried as old/), small_step for steps of <= 32 / 8 / 2 rows / none (d16, d24)
#   bash bench/gpu/s9.sh e   # all of tests/test_gpu.py on the new defaults; the NCHW decoder at batch 1 against channels-last
#   bash bench/gpu/s9.sh f   # the committed runtime, eager and fast in one run: d16 (with the stage breakdown), d24
#   bash bench/gpu/s9.sh g   # the committed runtime: bench.precision (fp16, bf16 against float32); d20, eager and fast
#   bash bench/gpu/s9.sh h   # after the review (head_input shared with the export graph): the runtime's logits, greedy,
#                            # graph and attention tests; tests/test_gpu_engines.py
set -uo pipefail
# (the set-up below, shared since session 11's review, is the one these calls ran with)
. bench/gpu/setup.sh
if [ "${1:-a}" = a ]; then
  timeout 200 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -x -k "block_gemm" > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error|error" "$L/gpu_tests.log" | tail -12
  timeout 330 python3 bench/gpu/block_gemm_probe.py --depths d16 --batches 1,8,32 --sweep 2>&1 \
    | grep -v Warning | tee "$OUT/block_gemm_probe.log"
elif [ "$1" = b ]; then
  timeout 120 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -x -k "block_gemm" > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error|error" "$L/gpu_tests.log" | tail -12
  timeout 200 python3 bench/gpu/block_gemm_probe.py --depths d16 --kernels 50,128,512,2304 2>&1 | grep -v Warning \
    | tee "$OUT/block_gemm_kernels.log"
  timeout 200 python3 bench/gpu/block_gemm_probe.py --depths d16 --batches 1,32 --max-rows 2400 2>&1 \
    | grep -v Warning | tee "$OUT/block_gemm_probe.log"
elif [ "$1" = c ]; then
  timeout 330 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider \
    -k "block_gemm or low_precision or graph or greedy or logits or small_step" > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error|error" "$L/gpu_tests.log" | tail -12
  timeout 150 python3 bench/gpu/block_gemm_probe.py --depths d16 --kernels 50,128,512 2>&1 | grep -v Warning \
    | tee "$OUT/block_gemm_kernels.log"
elif [ "$1" = d ]; then
  # the same run: this tree's runtime (its small_step row limits as variants), then d10d7c2's (carried in old/)
  timeout 240 flexvar bench --dtype fp16 --depths 16 --batches 1 --schedules 256-10 \
    --impls fast,fast-rows8,fast-rows2,fast-nosmall --repeat 7 --no-breakdown \
    --out "$OUT/ab_rows_d16.json" 2>&1 | grep -E "^bench: ran|^\||rror"
  rm -rf /tmp/oldpkg && mkdir -p /tmp/oldpkg/flexvar && cp -r old/flexvar/* /tmp/oldpkg/flexvar/ \
    && for d in kernels bench export engines; do cp -r old/$d /tmp/oldpkg/flexvar/$d; done
  (cd /tmp && PYTHONPATH=/tmp/oldpkg timeout 150 python3 -m flexvar bench --dtype fp16 --depths 16 --batches 1 \
    --schedules 256-10 --impls fast --repeat 7 --no-breakdown --out "$OUT/ab_rows_d16_old.json" 2>&1 \
    | grep -E "^bench: ran|^\||rror")
  timeout 170 flexvar bench --dtype fp16 --depths 24 --batches 1 --schedules 256-10 \
    --impls fast,fast-rows8 --repeat 5 --no-breakdown --out "$OUT/ab_rows_d24.json" 2>&1 | grep -E "^bench: ran|^\||rror"
elif [ "$1" = e ]; then
  timeout 340 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$L/gpu_tests.log" | tail -6
  timeout 130 flexvar bench --dtype fp16 --depths 16 --batches 1 --schedules 256-10 --impls fast,fast-nchw \
    --repeat 7 --no-breakdown --out "$OUT/ab_nchw_d16.json" 2>&1 | grep -E "^bench: ran|^\||rror"
elif [ "$1" = f ]; then
  timeout 250 flexvar bench --dtype fp16 --depths 16 --batches 1,32 --schedules 256-10 --impls eager,fast \
    --repeat 7 --out "$OUT/final_d16_256_10.json" 2>&1 | grep -E "^bench: ran|^\| d|rror"
  timeout 240 flexvar bench --dtype fp16 --depths 24 --batches 1,32 --schedules 256-10 --impls eager,fast \
    --repeat 5 --no-breakdown --out "$OUT/final_d24.json" 2>&1 | grep -E "^bench: ran|^\| d|rror"
elif [ "$1" = g ]; then
  timeout 170 python3 -m flexvar.bench.precision --depth d16 --batch 8 --dtypes bf16,fp16 \
    --out "$OUT/precision_d16.json" 2>&1 | tail -12
  timeout 240 flexvar bench --dtype fp16 --depths 20 --batches 1,32 --schedules 256-10 --impls eager,fast \
    --repeat 5 --no-breakdown --out "$OUT/final_d20.json" 2>&1 | grep -E "^bench: ran|^\| d|rror"
elif [ "$1" = h ]; then
  timeout 240 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider \
    -k "low_precision or graph or greedy or logits or attention" > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$L/gpu_tests.log" | tail -6
  timeout 300 python3 -m pytest -m gpu tests/test_gpu_engines.py -q -p no:cacheprovider > "$L/gpu_engines.log" 2>&1
  echo "engine tests rc=$?"; grep -E "passed|failed|Error|skipped" "$L/gpu_engines.log" | tail -4
fi
