#!/usr/bin/env bash
# One device call: the CUDA build of the host and the kernels (CMake), the sampling-kernel tests and
# micro-benchmark, the host's float32 check and its latency next to the Python runtimes, and a
# kernel profile of a batch-32 graph replay. Logs land in $OUT (one tarball for the text files).
#   bash bench/gpu/host_and_engines.sh
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}
mkdir -p "$OUT/logs"
L="$OUT/logs"
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$L/pip.log" 2>&1 || tail -5 "$L/pip.log"
TP=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
( cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_PREFIX_PATH="$TP" > "$L/cmake.log" 2>&1 &&
  cmake --build build -j 12 >> "$L/cmake.log" 2>&1; echo "cmake rc $?" >> "$L/cmake.log" ) &
BUILD=$!
python3 -c "import flexvar.kernels as K; print('kernels built:', K.load())" 2>&1 | tail -1
timeout 200 python3 -m pytest -q -x tests/test_gpu.py -k "guided or fast_fp32 or graph" 2>&1 | tail -3 | tee "$L/gpu_tests.log"
timeout 100 python3 -m pytest -q bench/bench_kernels.py -k guided --benchmark-only --benchmark-json "$L/bench_kernels.json" \
  --benchmark-columns=median,min,max 2>&1 | grep -E "^test_|passed|failed" | tee "$L/bench_kernels.txt"
wait $BUILD
grep -E "flexvar:|error|cmake rc" "$L/cmake.log" | head -20
ls -la build/flexvar_host build/*.so 2>&1 | tail -3
timeout 420 python3 -m flexvar.bench.host_latency --host build/flexvar_host --check-fp32 --depth d16 --dtype fp16 \
  --batches 1,32 --schedule 256-10 --repeat 10 --out "$OUT/host_latency.json" 2>&1 | grep -v Warning | tail -16
timeout 120 python3 -m flexvar.bench.profile_fast --graph --batch 32 --rows 30 > "$L/profile_b32.txt" 2>&1
grep -E "^profile|^by category" "$L/profile_b32.txt"
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$L"
