#!/usr/bin/env bash
# Session 6: the small_step kernel (every block of a step of <= 64 rows in one cooperative launch).
#   bash bench/gpu/small_step_s6.sh a   # build, its GPU tests, A/B against the per-block path (d16 B1/B32, d24 B1)
#   bash bench/gpu/small_step_s6.sh p   # the per-phase probe (bench/gpu/small_step_probe.cu), its GPU tests, A/B at B1
#   bash bench/gpu/small_step_s6.sh g   # sorted top-p in guided_sample: its tests, the sampling probe, d16 B1/B32
#   bash bench/gpu/small_step_s6.sh t   # warp-aggregated radix histogram: tests, sampling probe; A/B of Inductor's
#                                       # coordinate-descent tuning (decoder, blocks) at d16 B1/B32
#   bash bench/gpu/small_step_s6.sh f   # (first run) A/B of the row limit at d16/d24 B1; d16 B32; all GPU tests
#   bash bench/gpu/small_step_s6.sh r   # final: eager, fast, fast-tdec at d16 256-10 B1/B32 in one run; all GPU tests
#   bash bench/gpu/small_step_s6.sh s   # final: d20/d24 eager/fast; C++ host and engine tests
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}; L="$OUT/logs"; mkdir -p "$L"
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$L/pip.log" 2>&1 || tail -5 "$L/pip.log"
python3 -c "import flexvar.kernels as K; print('kernels built:', K.load())" 2>&1 | tail -3
if [ "${1:-a}" = a ]; then
  timeout 200 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -x \
    -k "kernels_build or small_step or low_precision or graph_replay" > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error|error" "$L/gpu_tests.log" | tail -12
  timeout 150 flexvar bench --dtype fp16 --depths 16 --batches 1,32 --schedules 256-10 --impls fast-nosmall,fast \
    --repeat 7 --no-breakdown --out "$OUT/ab_small_step_d16.json" 2>&1 | grep -E "^bench: ran|^\||rror"
  timeout 120 flexvar bench --dtype fp16 --depths 24 --batches 1 --schedules 256-10 --impls fast-nosmall,fast \
    --repeat 7 --no-breakdown --out "$OUT/ab_small_step_d24.json" 2>&1 | grep -E "^bench: ran|^\||rror"
elif [ "$1" = g ]; then
  timeout 200 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider \
    -k "guided_sample or small_step_in_a" > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error|error" "$L/gpu_tests.log" | tail -12
  timeout 60 python3 bench/gpu/sample_probe.py | tee "$OUT/sample_probe.log"
  timeout 150 flexvar bench --dtype fp16 --depths 16 --batches 1,32 --schedules 256-10 --impls fast \
    --repeat 7 --no-breakdown --out "$OUT/sorted_top_p_d16.json" 2>&1 | grep -E "^bench: ran|^\||rror"
elif [ "$1" = t ]; then
  timeout 120 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -k "guided_sample" > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error|error" "$L/gpu_tests.log" | tail -12
  timeout 60 python3 bench/gpu/sample_probe.py | tee "$OUT/sample_probe.log"
  timeout 420 flexvar bench --dtype fp16 --depths 16 --batches 1,32 --schedules 256-10 --impls fast,fast-tdec,fast-tdec-tblk \
    --repeat 7 --no-breakdown --out "$OUT/ab_tuning_d16.json" 2>&1 | grep -E "^bench: ran|^\||rror"
elif [ "$1" = p ]; then
  nvcc -O3 -std=c++17 -Ikernels/include -gencode=arch=compute_90,code=sm_90 bench/gpu/small_step_probe.cu \
    -o /tmp/small_step_probe && timeout 60 /tmp/small_step_probe | tee "$OUT/small_step_probe.log"
  timeout 60 python3 bench/gpu/sample_probe.py | tee "$OUT/sample_probe.log"
  command -v ncu || ls /usr/local/cuda*/bin 2>/dev/null | grep -i ncu || echo "no ncu"
  timeout 200 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -x \
    -k "small_step or low_precision or graph_replay" > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error|error" "$L/gpu_tests.log" | tail -12
  timeout 150 flexvar bench --dtype fp16 --depths 16,24 --batches 1 --schedules 256-10 --impls fast-nosmall,fast \
    --repeat 7 --no-breakdown --out "$OUT/ab_small_step_b1.json" 2>&1 | grep -E "^bench: ran|^\||rror"
elif [ "$1" = r ]; then
  timeout 330 flexvar bench --dtype fp16 --depths 16 --batches 1,32 --schedules 256-10 --impls eager,fast,fast-tdec \
    --repeat 7 --out "$OUT/final_d16_256_10.json" 2>&1 | grep -E "^bench: ran|^\||rror"
  timeout 170 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$L/gpu_tests.log" | tail -6
elif [ "$1" = s ]; then
  timeout 200 flexvar bench --dtype fp16 --depths 20,24 --batches 1,32 --schedules 256-10 --impls eager,fast \
    --repeat 5 --no-breakdown --out "$OUT/final_d20_d24.json" 2>&1 | grep -E "^bench: ran|^\||rror"
  timeout 150 python3 -m pytest -m gpu tests/test_gpu_host.py tests/test_gpu_engines.py -q -p no:cacheprovider \
    > "$L/gpu_host_engines.log" 2>&1
  echo "host/engine tests rc=$?"; grep -E "passed|failed|Error|skipped" "$L/gpu_host_engines.log" | tail -6
else
  timeout 150 flexvar bench --dtype fp16 --depths 16,24 --batches 1 --schedules 256-10 \
    --impls fast-nosmall,fast-rows16,fast-rows32,fast --repeat 7 --no-breakdown --out "$OUT/ab_small_step_rows.json" \
    2>&1 | grep -E "^bench: ran|^\||rror"
  timeout 90 flexvar bench --dtype fp16 --depths 16 --batches 32 --schedules 256-10 --impls fast-nosmall,fast \
    --repeat 5 --no-breakdown --out "$OUT/ab_small_step_b32.json" 2>&1 | grep -E "^bench: ran|^\||rror"
  timeout 240 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$L/gpu_tests.log" | tail -6
fi
tar czf "$OUT/logs_${1:-a}.tgz" -C "$OUT" logs && rm -rf "$L"
