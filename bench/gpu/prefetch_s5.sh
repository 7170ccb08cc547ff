#!/usr/bin/env bash
# Session 5: L2 prefetch of the next block's weights. A/B of the prefetch modes (and the streaming
# GEMM with prefetch) in one run, d16 256-10 at batch 1 and 32; then d24 at batch 1.
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}; L="$OUT/logs"; mkdir -p "$L"
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$L/pip.log" 2>&1 || tail -5 "$L/pip.log"
python3 -c "import flexvar.kernels as K; print('kernels built:', K.load())" 2>&1 | tail -1
timeout 300 flexvar bench --dtype fp16 --depths 16 --batches 1,32 --schedules 256-10 \
  --impls fast-nopf,fast,fast-pfattn,fast-gemm --repeat 7 --no-breakdown --out "$OUT/ab_prefetch_d16.json" 2>&1 \
  | grep -E "^bench: ran|^\|"
timeout 200 flexvar bench --dtype fp16 --depths 24 --batches 1 --schedules 256-10 \
  --impls fast-nopf,fast --repeat 7 --no-breakdown --out "$OUT/ab_prefetch_d24.json" 2>&1 | grep -E "^bench: ran|^\|"
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$L"
