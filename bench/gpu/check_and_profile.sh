#!/usr/bin/env bash
# One device call: install, build the kernels, the GPU tests, kernel-level profiles of graph replays,
# the kernel micro-benchmarks and a short fast-path timing. Logs land in $OUT.
#   bash bench/gpu/check_and_profile.sh
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/pip.log" 2>&1 || tail -5 "$OUT/pip.log"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw --format=csv | tee "$OUT/gpu.txt"
python3 -c "import flexvar.kernels as K; print('kernels built:', K.load())" 2>&1 | tail -2
timeout 300 python3 -m pytest -q -x tests/test_gpu.py 2>&1 | tail -15 | tee "$OUT/gpu_tests.log"
for B in 1 32; do
  timeout 200 python3 -m flexvar.bench.profile_fast --graph --batch $B --rows 45 > "$OUT/profile_b$B.txt" 2>&1
  head -2 "$OUT/profile_b$B.txt"
done
timeout 120 python3 -m pytest -q bench/bench_kernels.py --benchmark-only --benchmark-json "$OUT/bench_kernels.json" \
  --benchmark-columns=median,min,max 2>&1 | grep -E "^test_|passed|failed" | tee "$OUT/bench_kernels.txt"
timeout 200 flexvar bench --dtype fp16 --depths 16 --batches 1,32 --schedules 256-10 --impls fast --repeat 5 \
  --no-breakdown --out "$OUT/fast_quick.json" 2>&1 | tail -6
