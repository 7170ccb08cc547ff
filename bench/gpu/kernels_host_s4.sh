#!/usr/bin/env bash
# Session 4, last device call: the pytest-benchmark rows of qk_norm_cache (kernel beside its reference)
# and the CUDA C++ host test after the kernels' dtype enum moved into include/flexvar/dtype.h.
#   bash bench/gpu/kernels_host_s4.sh
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$OUT/pip.log" 2>&1 || tail -5 "$OUT/pip.log"
python3 -c "import flexvar.kernels as K; print('kernels built:', K.load())" 2>&1 | tail -1
timeout 150 python3 -m pytest bench/bench_kernels.py --benchmark-only -q -p no:cacheprovider -k qk_norm \
  --benchmark-json "$OUT/bench_kernels_qk_norm.json" --benchmark-columns=min,median,max 2>&1 | grep -E "test_|passed|failed" | tail -8
timeout 330 python3 -m pytest -q -rs -p no:cacheprovider tests/test_gpu_host.py > "$OUT/gpu_host_test.log" 2>&1
echo "host test rc=$?"; tail -2 "$OUT/gpu_host_test.log"; rm -f "$OUT/pip.log"
