#!/usr/bin/env bash
# One device call: the CUDA host (CMake) against the Python runtimes (exports in a child process).
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}
L="$OUT/logs"; mkdir -p "$L"
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$L/pip.log" 2>&1 || tail -5 "$L/pip.log"
TP=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_PREFIX_PATH="$TP" > "$L/cmake.log" 2>&1 &&
  cmake --build build -j 16 >> "$L/cmake.log" 2>&1; echo "cmake rc $?"
timeout 480 python3 -X faulthandler -m flexvar.bench.host_latency --host build/flexvar_host --check-fp32 --depth d16 \
  --dtype fp16 --batches 1,32 --schedule 256-10 --repeat 10 --out "$OUT/host_latency.json" > "$L/host_latency.log" 2>&1
echo "host_latency rc $?"; grep -v "sympy\|pow_by_natural\|Warning\|warn" "$L/host_latency.log" | tail -24
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$L"
