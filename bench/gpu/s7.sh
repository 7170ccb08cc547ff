#!/usr/bin/env bash
# Session 7 device calls.
#   bash bench/gpu/s7.sh t   # per-step timelines of a graph replay (d16 B1/B32, d24 B1); Inductor PDL A/B at d16 B1
#   bash bench/gpu/s7.sh a   # Triton attention: its GPU tests, the backends per step with a config sweep
#   bash bench/gpu/s7.sh b   # Triton attention: end-to-end A/B against SDPA (fast-sdpa) at d16 B1/B32, d24 B1
#   bash bench/gpu/s7.sh c   # attend_step (prologue + attention in one kernel): tests; A/B sdpa / triton / step
#   bash bench/gpu/s7.sh d   # the decoder's GroupNorm as Triton kernels: tests; A/B against Inductor's (fast-ingn)
#   bash bench/gpu/s7.sh e   # the same from batch 8 on (group_norm_min_batch): its tests; A/B at batch 1/8
#   bash bench/gpu/s7.sh r   # final: eager and fast at d16 256-10 B1/B32 in one run; all of tests/test_gpu.py
#   bash bench/gpu/s7.sh s   # final: d20/d24 eager/fast B1/B32; tests/test_gpu_engines.py
#   bash bench/gpu/s7.sh v   # after the review's refactor of the attention kernels: their tests and the runtime's
#   bash bench/gpu/s7.sh w   # second review (no CUDA extension): Triton kernel tests, their pytest-benchmark pairs
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}; L="$OUT/logs"; mkdir -p "$L"
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$L/pip.log" 2>&1 || tail -5 "$L/pip.log"
python3 -c "import flexvar.kernels as K; print('kernels built:', K.load())" 2>&1 | tail -3
if [ "${1:-t}" = t ]; then
  for cfg in "d16 1" "d16 32" "d24 1"; do
    set -- $cfg
    timeout 200 python3 -m flexvar.bench.profile_fast --graph --depth "$1" --batch "$2" --rows 40 \
      --timeline "$OUT/timeline_$1_b$2.json" > "$OUT/profile_$1_b$2.txt" 2>&1
    echo "profile $1 B$2 rc=$?"; grep -E "^profile|^by category|^step|^decode" "$OUT/profile_$1_b$2.txt"
  done
  python3 -c "import torch._inductor.config as c; print('inductor enable_pdl:', getattr(c.triton, 'enable_pdl', 'absent'))"
  for pdl in 0 1; do
    TORCHINDUCTOR_ENABLE_PDL=$pdl timeout 150 flexvar bench --dtype fp16 --depths 16 --batches 1 --schedules 256-10 \
      --impls fast --repeat 9 --no-breakdown --out "$OUT/ab_pdl$pdl.json" 2>&1 | grep -E "^\| d|rror"
  done
elif [ "$1" = a ]; then
  timeout 240 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -x \
    -k "attention or low_precision or small_step_in_a or graph_replay" > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error|error" "$L/gpu_tests.log" | tail -12
  timeout 240 python3 -m flexvar.bench.attn_backends --backends cudnn,flash,triton --sweep 2>&1 | tee "$OUT/attn_sweep.log"
  timeout 60 python3 -m flexvar.bench.attn_backends --backends cudnn,triton --heads 24 --batches 1 2>&1 | tee -a "$OUT/attn_sweep.log"
elif [ "$1" = b ]; then
  timeout 300 flexvar bench --dtype fp16 --depths 16 --batches 1,32 --schedules 256-10 --impls fast-sdpa,fast \
    --repeat 7 --no-breakdown --out "$OUT/ab_attention_d16.json" 2>&1 | grep -E "^\| d|rror"
  timeout 200 flexvar bench --dtype fp16 --depths 24 --batches 1 --schedules 256-10 --impls fast-sdpa,fast \
    --repeat 7 --no-breakdown --out "$OUT/ab_attention_d24.json" 2>&1 | grep -E "^\| d|rror"
elif [ "$1" = c ]; then
  timeout 240 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -x \
    -k "attend or attention or low_precision or small_step_in_a or graph_replay" > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error|error" "$L/gpu_tests.log" | tail -12
  timeout 300 flexvar bench --dtype fp16 --depths 16 --batches 1,32 --schedules 256-10 --impls fast-sdpa,fast-triton,fast \
    --repeat 7 --no-breakdown --out "$OUT/ab_attend_step_d16.json" 2>&1 | grep -E "^\| d|rror"
  timeout 200 flexvar bench --dtype fp16 --depths 24 --batches 1 --schedules 256-10 --impls fast-sdpa,fast-triton,fast \
    --repeat 7 --no-breakdown --out "$OUT/ab_attend_step_d24.json" 2>&1 | grep -E "^\| d|rror"
elif [ "$1" = d ]; then
  timeout 240 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider \
    -k "attend or attention or group_norm or low_precision or graph_replay" > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error|error" "$L/gpu_tests.log" | tail -12
  timeout 320 flexvar bench --dtype fp16 --depths 16 --batches 1,32 --schedules 256-10 --impls fast-ingn,fast \
    --repeat 7 --no-breakdown --out "$OUT/ab_group_norm_d16.json" 2>&1 | grep -E "^\| d|rror"
elif [ "$1" = e ]; then
  timeout 200 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -k "group_norm" > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error|error|reference used" "$L/gpu_tests.log" | tail -12
  timeout 300 flexvar bench --dtype fp16 --depths 16 --batches 1,8 --schedules 256-10 --impls fast-ingn,fast \
    --repeat 7 --no-breakdown --out "$OUT/ab_group_norm_b8_d16.json" 2>&1 | grep -E "^\| d|rror|reference used"
elif [ "$1" = r ]; then
  timeout 300 flexvar bench --dtype fp16 --depths 16 --batches 1,32 --schedules 256-10 --impls eager,fast \
    --repeat 7 --out "$OUT/final_d16_256_10.json" 2>&1 | grep -E "^bench: ran|^\| d|rror"
  timeout 280 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$L/gpu_tests.log" | tail -6
elif [ "$1" = s ]; then
  timeout 330 flexvar bench --dtype fp16 --depths 20,24 --batches 1,32 --schedules 256-10 --impls eager,fast \
    --repeat 5 --no-breakdown --out "$OUT/final_d20_d24.json" 2>&1 | grep -E "^bench: ran|^\| d|rror"
  timeout 200 python3 -m pytest -m gpu tests/test_gpu_engines.py -q -p no:cacheprovider > "$L/gpu_engines.log" 2>&1
  echo "engine tests rc=$?"; grep -E "passed|failed|Error|skipped" "$L/gpu_engines.log" | tail -4
elif [ "$1" = v ]; then
  timeout 250 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider \
    -k "attend or attention or low_precision or fp32_greedy or graph_replay or small_step_in_a" > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$L/gpu_tests.log" | tail -6
  timeout 150 flexvar bench --dtype fp16 --depths 16 --batches 1,32 --schedules 256-10 --impls fast \
    --repeat 7 --no-breakdown --out "$OUT/review_d16.json" 2>&1 | grep -E "^\| d|rror"
elif [ "$1" = w ]; then
  export FLEXVAR_NO_KERNELS=1
  timeout 200 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -k "attend or attention or group_norm" \
    > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$L/gpu_tests.log" | tail -6
  timeout 120 python3 -m pytest bench/bench_kernels.py -q -p no:cacheprovider -k "attend_step or group_norm" \
    --benchmark-columns=min,median,max --benchmark-json "$OUT/bench_kernels_triton_s7.json" 2>&1 | grep -E "^test_|passed|failed"
fi
