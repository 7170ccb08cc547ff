#!/usr/bin/env bash
# Session 13 device calls.
#   bash bench/gpu/s13.sh a   # programmatic dependent launches (Inductor's Triton kernels and attend_step) on and
#                            # off in one process (impls fast, fast-nopdl): d16 batch 1 and 32
#   bash bench/gpu/s13.sh b   # the attention, PDL, greedy, graph-replay, teacher-forced and in-painting GPU tests;
#                            # d24 batch 1 with and without PDL
#   (a ran at 6eebb8d's runtime; then, in one more call, `flexvar bench --dtype fp16 --schedules 256-10 --impls
#    fast-nopdl,fast,fast-nopdl,fast --repeat 9 --no-breakdown --depths 16 --batches 1`. No gain: the PDL switch
#    was reverted and b was never run; both fail at later commits, which have no fast-nopdl variant)
#   bash bench/gpu/s13.sh c   # cuBLASLt's algorithms for the block GEMMs at batch 1, d16 and d24 widths
#                            # (bench/gpu/lt_probe.cu: the heuristic's first against the fastest of up to 32)
#   bash bench/gpu/s13.sh d   # guided_sample's GPU tests; the schedule table (256 px 6-13 steps at batch 1-64;
#                            # 384-11, 512-12, 1:2 at batch 1 and 32) on the current runtime
#   bash bench/gpu/s13.sh e   # tests/test_gpu_engines.py with onnxruntime-gpu (carried into /tmp/site first, as
#                            # ../shared/hooks/gpu-wheels.sh prints); d20 256-10 at batch 1 and 32
#   bash bench/gpu/s13.sh f   # the final code: all of tests/test_gpu.py
#   bash bench/gpu/s13.sh g   # the final code: the CUDA C++ host test
#   bash bench/gpu/s13.sh h   # after the review: the sampling, greedy, graph-replay, teacher-forced and in-painting
#                            # GPU tests (then g again: the host links the sampling kernel)
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
if [ "${1:-a}" = d ]; then  # guided_sample's stage_row (no unconditional address for rule "none"): its GPU tests;
                            # the schedule table on the current runtime, eager and fast in one run each
  timeout 100 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -k "guided_sample" \
    > "$OUT/gpu_tests_d.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_d.log" | tail -4
  schedule_tables  # (moved into setup.sh by the review; the same two commands ran)
fi
if [ "${1:-a}" = e ]; then  # tests/test_gpu_engines.py with onnxruntime-gpu 1.31.1 (carried before, in /tmp/site);
                            # d20 256-10, eager and fast
  PYTHONPATH=/tmp/site timeout 300 python3 -m pytest -m gpu tests/test_gpu_engines.py -q -rs -p no:cacheprovider \
    > "$OUT/gpu_engines.log" 2>&1
  echo "engine tests rc=$?"; grep -E "passed|failed|Error|skipped|SKIP" "$OUT/gpu_engines.log" | tail -6
  timeout 200 flexvar bench --dtype fp16 --depths 20 --batches 1,32 --schedules 256-10 --impls eager,fast \
    --repeat 5 --no-breakdown --out "$OUT/d20.json" 2>&1 | grep -E "^bench: ran|^\||rror"
fi
if [ "${1:-a}" = f ]; then  # the final code: all of tests/test_gpu.py
  timeout 500 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider > "$OUT/gpu_tests_f.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_f.log" | tail -8
fi
if [ "${1:-a}" = g ]; then  # the final code: the CUDA C++ host test
  timeout 420 python3 -m pytest -m gpu tests/test_gpu_host.py -q -p no:cacheprovider > "$OUT/gpu_host.log" 2>&1
  echo "host tests rc=$?"; grep -E "passed|failed|Error|skipped" "$OUT/gpu_host.log" | tail -6
fi
if [ "${1:-a}" = h ]; then  # after the review (guided_sample's row addresses in one helper; the head GEMM and the
                            # guidance coefficients shared): sampling, greedy, graph-replay, teacher-forced,
                            # in-painting GPU tests
  timeout 450 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -k "guided_sample or greedy or \
graph_replay or small_step_in or low_precision or triton_attention_matches or inpaint" > "$OUT/gpu_tests_h.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_h.log" | tail -8
fi
