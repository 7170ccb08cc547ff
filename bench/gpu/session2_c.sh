#!/usr/bin/env bash
# One device call: GPU tests, fast-path timings, an AOTInductor crash probe, the CUDA host benchmark.
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}
L="$OUT/logs"; mkdir -p "$L"
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$L/pip.log" 2>&1 || tail -5 "$L/pip.log"
TP=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
( cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_PREFIX_PATH="$TP" > "$L/cmake.log" 2>&1 &&
  nice cmake --build build -j 6 >> "$L/cmake.log" 2>&1; echo "cmake rc $?" >> "$L/cmake.log" ) &
BUILD=$!
timeout 240 python3 -m pytest -q tests/test_gpu.py 2>&1 | grep -E "passed|failed|FAILED|Error" | tail -8 | tee "$L/gpu_tests.log"
timeout 150 flexvar bench --dtype fp16 --depths 16 --batches 1,32 --schedules 256-10 --impls fast --repeat 5 \
  --no-breakdown --out "$OUT/fast_d16.json" 2>&1 | grep -E "^\| d" 
timeout 100 python3 -m flexvar.bench.profile_fast --graph --batch 1 --rows 25 > "$L/profile_b1.txt" 2>&1
grep -E "^profile|^by category" "$L/profile_b1.txt"
wait $BUILD; grep -E "cmake rc" "$L/cmake.log"
timeout 100 python3 -X faulthandler bench/gpu/aoti_probe.py /tmp/probe > "$L/aoti_probe.log" 2>&1; echo "probe rc $?"
tail -25 "$L/aoti_probe.log" | grep -v "sympy\|pow_by_natural"
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$L"
