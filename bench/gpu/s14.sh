#!/usr/bin/env bash
# Session 14 device calls.
#   bash bench/gpu/s14.sh a   # the first-step table: its GPU tests with the greedy, teacher-forced, graph-replay and
#                            # in-painting ones; d16 256-10 batch 1 and 32 with and without it in one process
#   bash bench/gpu/s14.sh b   # d24 batch 1 with and without it; the table's build time and size at d16 / d24;
#                            # a kernel timeline of the d16 batch 1 graph replay
#   python3 bench/gpu/skinny_probe.py   # a split-K skinny GEMM against cuBLAS at 18-128 rows (ran at 55b6479 with no
#                            # setup; since bffe24d it takes the runtime's kernel: source setup.sh first)
#   bash bench/gpu/s14.sh c   # (ran at 55b6479, then at bffe24d) final: d16 and d24 256-10 at batch 1 and 32, eager and fast in one run each (with
#                            # the stage breakdown); bench.precision (bf16, fp16)
#   bash bench/gpu/s14.sh d   # (ran at 55b6479, then at bffe24d) final: all of tests/test_gpu.py
#   bash bench/gpu/s14.sh e   # final: the schedule table (setup.sh's schedule_tables); d20 256-10 at batch 1 and 32
#   bash bench/gpu/s14.sh f   # final: the CUDA C++ host test
#   bash bench/gpu/s14.sh h   # the split-K projection and fc2 (`skinny_rows`): their GPU tests with the greedy,
#                            # teacher-forced, graph-replay and in-painting ones; batch 1 with them off / at <= 32
#                            # rows (default) / at <= 128 rows in one process, d16 and d24
#   bash bench/gpu/s14.sh g   # small_step's row limit again, now that the first step comes from the table: 2 (never:
#                            # step 2 has 8 rows), 8 (default) and 32 in one process, d16 and d24 batch 1
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}
. bench/gpu/setup.sh
first_ab() {  # first_ab NAME ARGS...: fast-nofirst and fast in one process
  local name=$1; shift
  (cd /tmp && timeout 280 python3 -m flexvar bench --dtype fp16 --schedules 256-10 --impls fast-nofirst,fast \
    --repeat 9 --no-breakdown "$@" --out "$OUT/first_${name}.json" 2>&1 | grep -E "^bench: ran|^\||rror")
}
if [ "${1:-a}" = a ]; then
  timeout 300 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -k "first_step or greedy or \
low_precision or graph_replay or small_step_in or inpaint" > "$OUT/gpu_tests_a.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_a.log" | tail -8
  first_ab d16 --depths 16 --batches 1,32
elif [ "$1" = b ]; then
  first_ab d24 --depths 24 --batches 1
  python3 - <<'PY' 2>&1 | grep -v Warning
import time, torch
from flexvar.config import FlexVARConfig, VQVAEConfig
from flexvar.fast import FastRuntime
from flexvar.random_weights import random_tokenizer, random_transformer
vae = random_tokenizer(VQVAEConfig.from_name("vq16"), device="cuda").half()
for d in ("d16", "d24"):
    rt = FastRuntime(random_transformer(FlexVARConfig.from_name(d), device="cuda").half(), vae)
    rt.first_step((2, 2)), rt.clear()  # compile the block halves first
    torch.cuda.synchronize(); t = time.perf_counter()
    rt.first_step((1, 1)); torch.cuda.synchronize()
    print(f"first-step table {d} 1x1: {(time.perf_counter() - t) * 1e3:.1f} ms, {rt.first_step_bytes((1, 1)) / 2**20:.1f} MiB")
PY
  timeout 200 python3 -m flexvar.bench.profile_fast --graph --timeline "$OUT/timeline_d16_b1.json" > "$OUT/timeline_d16_b1.txt" 2>&1
  grep -E "^profile|^by category|^step|^decode" "$OUT/timeline_d16_b1.txt"
fi
if [ "${1:-a}" = c ]; then
  final_runs  # setup.sh (since session 15; the same commands as ran)
elif [ "$1" = d ]; then
  timeout 500 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider > "$OUT/gpu_tests_d.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_d.log" | tail -8
elif [ "$1" = e ]; then
  schedule_tables
  timeout 200 flexvar bench --dtype fp16 --depths 20 --batches 1,32 --schedules 256-10 --impls eager,fast \
    --repeat 5 --no-breakdown --out "$OUT/d20.json" 2>&1 | grep -E "^bench: ran|^\||rror"
elif [ "$1" = f ]; then
  timeout 420 python3 -m pytest -m gpu tests/test_gpu_host.py -q -p no:cacheprovider > "$OUT/gpu_host.log" 2>&1
  echo "host tests rc=$?"; grep -E "passed|failed|Error|skipped" "$OUT/gpu_host.log" | tail -6
fi
if [ "${1:-a}" = g ]; then
  for d in 16 24; do
    (cd /tmp && timeout 280 python3 -m flexvar bench --dtype fp16 --schedules 256-10 --impls fast-rows2,fast,fast-rows32 \
      --repeat 9 --no-breakdown --depths $d --batches 1 --out "$OUT/rows_d$d.json" 2>&1 | grep -E "^bench: ran|^\||rror")
  done
fi
if [ "${1:-a}" = h ]; then
  timeout 280 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -k "skinny or greedy or \
low_precision or graph_replay or inpaint or first_step" > "$OUT/gpu_tests_h.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_h.log" | tail -8
  for d in 16 24; do
    (cd /tmp && timeout 200 python3 -m flexvar bench --dtype fp16 --schedules 256-10 \
      --impls fast-skinny0,fast,fast-skinny128 --repeat 9 --no-breakdown --depths $d --batches 1 \
      --out "$OUT/skinny_d$d.json" 2>&1 | grep -E "^bench: ran|^\||rror")
  done
fi
