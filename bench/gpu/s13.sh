#!/usr/bin/env bash
# Session 13 device calls.
#   bash bench/gpu/s13.sh a   # programmatic dependent launches (Inductor's Triton kernels and attend_step) on and
#                            # off in one process (impls fast, fast-nopdl): d16 batch 1 and 32
#   bash bench/gpu/s13.sh b   # the attention, PDL, greedy, graph-replay, teacher-forced and in-painting GPU tests;
#                            # d24 batch 1 with and without PDL
#   bash bench/gpu/s13.sh c   # cuBLASLt's algorithms for the block GEMMs at batch 1, d16 and d24 widths
#                            # (bench/gpu/lt_probe.cu: the heuristic's first against the fastest of up to 32)
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}
[ "${1:-a}" = c ] || . bench/gpu/setup.sh
pdl_ab() {  # pdl_ab NAME ARGS...: fast and fast-nopdl, in both orders, in one process each
  local name=$1; shift
  for impls in fast-nopdl,fast fast,fast-nopdl; do
    (cd /tmp && timeout 280 python3 -m flexvar bench --dtype fp16 --schedules 256-10 --impls $impls --repeat 9 \
      --no-breakdown "$@" --out "$OUT/pdl_${name}_${impls%%,*}_first.json" 2>&1 | grep -E "^bench: ran|^\||rror")
  done
}
if [ "${1:-a}" = a ]; then
  python3 -c "import torch, torch._inductor.config as c; print('torch', torch.__version__, 'enable_pdl' in dir(c.triton))"
  pdl_ab d16 --depths 16 --batches 1,32
  echo "inductor kernels with griddepcontrol: $(grep -rl gdc_wait /tmp/torchinductor_* 2>/dev/null | wc -l)"
elif [ "$1" = b ]; then
  timeout 330 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -k "attend_step_kernel or \
attention_kernel or pdl or graph_replay or greedy or triton_attention_matches or small_step_in or inpaint or \
low_precision" > "$OUT/gpu_tests_b.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_b.log" | tail -8
  pdl_ab d24 --depths 24 --batches 1
fi
if [ "${1:-a}" = c ]; then  # cuBLASLt's algorithms for the block GEMMs at batch 1 (bench/gpu/lt_probe.cu)
  H=$(find / -name cublasLt.h -path "*nvidia*" 2>/dev/null | head -1); LIB=$(find / -name "libcublasLt.so*" -path "*nvidia*" 2>/dev/null | head -1)
  echo "header $H lib $LIB"
  nvcc -O2 -arch=sm_90 -o /tmp/lt_probe bench/gpu/lt_probe.cu -I"$(dirname "$H")" -L"$(dirname "$LIB")" -l:"$(basename "$LIB")" -Xlinker -rpath="$(dirname "$LIB")" 2>&1 | grep -v Warning | head -20
  for c in 1024 1536; do /tmp/lt_probe $c | tee "$OUT/lt_probe_$c.log"; done
fi
