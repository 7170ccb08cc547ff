#!/usr/bin/env bash
# Session 4, third device call: the 16-way top-p search of the guided-sampling kernel (GPU kernel
# tests, fp32 greedy end to end, kernel times in the batch-1/32 profiles) and attention backends on the
# fast runtime's cache views.   bash bench/gpu/sampling_attn_s4.sh
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}; L="$OUT/logs"; mkdir -p "$L"
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$L/pip.log" 2>&1 || tail -5 "$L/pip.log"
python3 -c "import flexvar.kernels as K; print('kernels built:', K.load())" 2>&1 | tail -1
timeout 200 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -k "guided_sample or greedy or qk_norm" \
  > "$L/gpu_tests.log" 2>&1
echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$L/gpu_tests.log" | tail -6
timeout 120 python3 -m flexvar.bench.attn_backends 2>&1 | grep "^attention"
for B in 1 32; do
  timeout 150 python3 -m flexvar.bench.profile_fast --graph --batch $B --rows 30 > "$OUT/profile_b$B.txt" 2>&1
  grep -E "^profile|^by cat" "$OUT/profile_b$B.txt"; grep guided_sample "$OUT/profile_b$B.txt" | cut -c1-60,150-
done
tar czf "$OUT/logs_c.tgz" -C "$OUT" logs && rm -rf "$L"
