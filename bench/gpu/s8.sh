#!/usr/bin/env bash
# Session 8 device calls.
#   bash bench/gpu/s8.sh k   # small_step's GPU tests and the probe (run at b6435a0 on v5, the LayerNorms folded
#                            # into the GEMMs; v5 was slower and reverted, so at later commits this runs v4)
#   bash bench/gpu/s8.sh m   # the committed runtime: all of tests/test_gpu.py; bench.precision with the Triton attention
#   bash bench/gpu/s8.sh n   # d16 256 px, 6/8/10/13 steps, batch 1/8/32/64, eager and fast in one run
#   bash bench/gpu/s8.sh o   # d16 384-11, 512-12 and 1:2 (256x512, 10 steps), batch 1/32, eager and fast in one run
#   bash bench/gpu/s8.sh p   # tests/test_gpu_engines.py (no onnxruntime-gpu carried: its CUDA EP tests skip) and
#                            # tests/test_gpu_host.py
#   bash bench/gpu/s8.sh q   # --tune-decoder (fast-tdec) against the default on the current runtime, d16 B1/B32
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}; L="$OUT/logs"; mkdir -p "$L"
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$L/pip.log" 2>&1 || tail -5 "$L/pip.log"
python3 -c "import flexvar.kernels as K; print('kernels built:', K.load())" 2>&1 | tail -3
if [ "${1:-k}" = k ]; then
  timeout 240 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider \
    -k "small_step or low_precision or graph_replay or fp32_greedy" > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error|error" "$L/gpu_tests.log" | tail -12
  nvcc -O3 -std=c++17 -Ikernels/include -gencode=arch=compute_90,code=sm_90 bench/gpu/small_step_probe.cu \
    -o /tmp/small_step_probe && timeout 60 /tmp/small_step_probe | tee "$OUT/small_step_probe.log"
elif [ "$1" = m ]; then
  timeout 330 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$L/gpu_tests.log" | tail -6
  timeout 170 python3 -m flexvar.bench.precision --depth d16 --batch 8 --dtypes bf16,fp16 \
    --out "$OUT/precision_d16.json" 2>&1 | tail -12
elif [ "$1" = n ]; then
  timeout 560 flexvar bench --dtype fp16 --depths 16 --batches 1,8,32,64 --schedules '256-6;256-8;256-10;256-13' \
    --impls eager,fast --repeat 5 --no-breakdown --out "$OUT/d16_256px.json" 2>&1 | grep -E "^bench: ran|^\|"
elif [ "$1" = o ]; then
  timeout 560 flexvar bench --dtype fp16 --depths 16 --batches 1,32 \
    --schedules '384-11;512-12;1x2,2x4,3x6,4x8,5x10,6x12,8x16,10x20,13x26,16x32' --impls eager,fast --repeat 5 \
    --no-breakdown --out "$OUT/d16_res.json" 2>&1 | grep -E "^bench: ran|^\|"
elif [ "$1" = p ]; then
  timeout 420 python3 -m pytest -m gpu tests/test_gpu_engines.py -q -p no:cacheprovider > "$L/gpu_engines.log" 2>&1
  echo "engine tests rc=$?"; grep -E "passed|failed|Error|skipped" "$L/gpu_engines.log" | tail -6
  timeout 150 python3 -m pytest -m gpu tests/test_gpu_host.py -q -p no:cacheprovider > "$L/gpu_host.log" 2>&1
  echo "host tests rc=$?"; grep -E "passed|failed|Error|skipped" "$L/gpu_host.log" | tail -6
elif [ "$1" = q ]; then
  timeout 560 flexvar bench --dtype fp16 --depths 16 --batches 1,32 --schedules 256-10 --impls fast,fast-tdec \
    --repeat 7 --no-breakdown --out "$OUT/ab_tune_decoder_d16.json" 2>&1 | grep -E "^bench: ran|^\||rror"
fi
