#!/usr/bin/env bash
# Session 10 device calls.
#   bash bench/gpu/s10.sh a   # the L2 prefetch op and the GroupNorm statistics kernel: their GPU tests; d16 batch 1
#                            # with the prefetch off / in line (32 MiB) / on a second stream / 48 MiB, one run
#                            # (a ran at b46fa3a; the prefetch was removed after it, so a fails at later commits)
#   bash bench/gpu/s10.sh b   # the GroupNorm statistics kernel: its GPU tests; batch 32 A/B against the previous
#                            # runtime (a38f374, carried as old/)
#   bash bench/gpu/s10.sh c   # GroupNorm apply with its own chunks, the decoder's attention as two products: their
#                            # GPU tests; d16 batch 1 and 32 against a38f374 (old/) in the same call
#   bash bench/gpu/s10.sh d   # the decode's kernels by full name (graph replay), d16 batch 1 and 32
#   (then onnxruntime-gpu 1.31.1 carried in five calls, ../shared/hooks/gpu-wheels.sh, and tests/test_gpu_engines.py
#    run with it: PYTHONPATH=/tmp/site python3 -m pytest -m gpu tests/test_gpu_engines.py -q -rs)
#   bash bench/gpu/s10.sh e   # GroupNorm loops pipelined, cuDNN benchmark mode for the decoder: GPU tests; d16 batch 1
#                            # and 32 with and without the benchmark mode, and be94062 (old/) in the same call (e ran at
#                            # 79ec878; the benchmark mode was removed after it, so its fast-noconvtune fails later)
#   bash bench/gpu/s10.sh f   # the committed runtime, eager and fast in one run: d16 (with the stage breakdown), d24
#   bash bench/gpu/s10.sh g   # after the review (the decoder's attention as a hook of vqvae.AttnBlock): the product
#                            # attention, decoder, fp32-greedy and graph GPU tests; d16 batch 1 and 32, fast
set -uo pipefail
# (the set-up below, shared since session 11's review, is the one these calls ran with)
. bench/gpu/setup.sh
if [ "${1:-a}" = a ]; then
  timeout 150 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -x -k "l2_prefetch or group_norm" \
    > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error|error" "$L/gpu_tests.log" | tail -12
  timeout 330 flexvar bench --dtype fp16 --depths 16 --batches 1 --schedules 256-10 \
    --impls fast-pf0,fast,fast-pfside,fast-pf48 --repeat 9 --no-breakdown --out "$OUT/ab_prefetch_d16.json" 2>&1 \
    | grep -E "^bench: ran|^\||rror"
elif [ "$1" = b ]; then
  timeout 100 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -x -k "group_norm" \
    > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error|error" "$L/gpu_tests.log" | tail -12
  timeout 150 flexvar bench --dtype fp16 --depths 16 --batches 32 --schedules 256-10 --impls fast --repeat 7 \
    --no-breakdown --out "$OUT/ab_b32_d16.json" 2>&1 | grep -E "^bench: ran|^\||rror"
  oldpkg
  (cd /tmp && PYTHONPATH=/tmp/oldpkg timeout 120 python3 -m flexvar bench --dtype fp16 --depths 16 --batches 32 \
    --schedules 256-10 --impls fast --repeat 7 --no-breakdown --out "$OUT/ab_b32_d16_old.json" 2>&1 \
    | grep -E "^bench: ran|^\||rror")
  timeout 150 python3 -m flexvar.bench.profile_fast --depth d16 --batch 32 --graph 2>&1 | grep -E "^profile|^by cat|_gn_" \
    | tee "$OUT/profile_b32.txt"
elif [ "$1" = c ]; then
  timeout 200 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider \
    -k "group_norm or decoder or greedy or graph_replay" > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error|error" "$L/gpu_tests.log" | tail -12
  timeout 170 flexvar bench --dtype fp16 --depths 16 --batches 1,32 --schedules 256-10 --impls fast --repeat 9 \
    --no-breakdown --out "$OUT/ab_c_d16.json" 2>&1 | grep -E "^bench: ran|^\||rror"
  oldpkg
  (cd /tmp && PYTHONPATH=/tmp/oldpkg timeout 150 python3 -m flexvar bench --dtype fp16 --depths 16 --batches 1,32 \
    --schedules 256-10 --impls fast --repeat 9 --no-breakdown --out "$OUT/ab_c_d16_old.json" 2>&1 \
    | grep -E "^bench: ran|^\||rror")
elif [ "$1" = d ]; then
  for b in 1 32; do
    timeout 200 python3 -m flexvar.bench.profile_fast --depth d16 --batch $b --graph --decode-kernels --rows 0 2>&1 \
      | grep -vE "Warning|warn_once|^-|Name|^$|Self" > "$OUT/decode_kernels_b$b.txt"
    head -30 "$OUT/decode_kernels_b$b.txt"
  done
elif [ "$1" = e ]; then
  timeout 200 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider \
    -k "group_norm or decoder or graph_replay or greedy" > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error|error" "$L/gpu_tests.log" | tail -12
  timeout 200 flexvar bench --dtype fp16 --depths 16 --batches 1,32 --schedules 256-10 --impls fast,fast-noconvtune \
    --repeat 9 --no-breakdown --out "$OUT/ab_e_d16.json" 2>&1 | grep -E "^bench: ran|^\||rror"
  oldpkg
  (cd /tmp && PYTHONPATH=/tmp/oldpkg timeout 150 python3 -m flexvar bench --dtype fp16 --depths 16 --batches 1,32 \
    --schedules 256-10 --impls fast --repeat 9 --no-breakdown --out "$OUT/ab_e_d16_old.json" 2>&1 \
    | grep -E "^bench: ran|^\||rror")
elif [ "$1" = f ]; then
  timeout 270 flexvar bench --dtype fp16 --depths 16 --batches 1,32 --schedules 256-10 --impls eager,fast \
    --repeat 7 --out "$OUT/final_d16_256_10.json" 2>&1 | grep -E "^bench: ran|^\| d|rror"
  timeout 250 flexvar bench --dtype fp16 --depths 24 --batches 1,32 --schedules 256-10 --impls eager,fast \
    --repeat 5 --no-breakdown --out "$OUT/final_d24.json" 2>&1 | grep -E "^bench: ran|^\| d|rror"
elif [ "$1" = g ]; then
  timeout 260 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider \
    -k "product_attention or decoder or greedy or graph_replay" > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error|error" "$L/gpu_tests.log" | tail -12
  timeout 150 flexvar bench --dtype fp16 --depths 16 --batches 1,32 --schedules 256-10 --impls fast --repeat 9 \
    --no-breakdown --out "$OUT/review_d16.json" 2>&1 | grep -E "^bench: ran|^\||rror"
fi
