#!/usr/bin/env bash
# Session 15 device calls.
#   python3 bench/gpu/l2_probe.py --runtime   # (after setup.sh) block GEMMs with weights cold / in L2 / prefetched by
#                            # one-program kernels; the runtime with every block on block 0's weights (L2's upper bound)
#   bash bench/gpu/s15.sh a   # (ran at 40a88f7; its pfN variants were reverted in the next commit) the L2 prefetch: its GPU tests with the greedy, graph-replay, skinny and first-step ones;
#                            # d16 batch 1 with budgets 0 / 12 / 24 MiB in one process
#   bash bench/gpu/s15.sh b   # (not run: d16 was slower) d24 batch 1 with budgets 0 / 24 / 48 / 64 MiB in one process
#   bash bench/gpu/s15.sh c   # kernel timelines (JSON, every kernel) of the d16 and d24 batch 1 graph replays; the split-K
#                            # row limit at 32 (default) / 50 / 72 in one process, d16 and d24 batch 1
#   bash bench/gpu/s15.sh d   # the split-K sum written as additions (fused into the LayerNorm kernel at d16): the skinny,
                         # greedy and graph-replay GPU tests; a d16 batch 1 timeline; split-K row limits 0 / 32 / 50 / 72 /
                         # 128 in one process, d16 and d24 batch 1
#   bash bench/gpu/s15.sh e   # persistent LayerNorm kernels at any width (`persistent_norms`, Inductor's multi_kernel = 2) and
                         # the split-K row limit 128: d24 and d16 batch 1 with each off and on in one process; the skinny,
                         # greedy, graph-replay and first-step GPU tests
#   bash bench/gpu/s15.sh f   # (ran at ce6c8f9, reverted next: slower) attend_step's keys split in batch 1's late steps: its GPU tests; d16 and d24 batch 1 with the
                         # split off and on in one process
#   bash bench/gpu/s15.sh g   # final: d16 and d24 256-10 at batch 1 and 32, eager and fast in one run each (with the stage
                         # breakdown); bench.precision (bf16, fp16)
#   bash bench/gpu/s15.sh h   # final: all of tests/test_gpu.py
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}
. bench/gpu/setup.sh
pf_ab() {  # pf_ab NAME IMPLS ARGS...: the variants in one process, 256-10
  local name=$1 impls=$2; shift 2
  (cd /tmp && timeout 280 python3 -m flexvar bench --dtype fp16 --schedules 256-10 --impls "$impls" \
    --repeat 15 --no-breakdown "$@" --out "$OUT/pf_${name}.json" 2>&1 | grep -E "^bench: ran|^\||rror")
}
if [ "${1:-a}" = a ]; then
  timeout 240 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -k "l2_prefetch or greedy or \
graph_replay or skinny or first_step" > "$OUT/gpu_tests_a.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_a.log" | tail -8
  pf_ab d16 fast-pf0,fast-pf12,fast-pf24,fast-pf0 --depths 16 --batches 1
elif [ "$1" = b ]; then
  pf_ab d24 fast-pf0,fast-pf24,fast-pf48,fast-pf64 --depths 24 --batches 1
fi
if [ "${1:-a}" = c ]; then
  for d in d16 d24; do
    timeout 200 python3 -m flexvar.bench.profile_fast --depth $d --graph --timeline "$OUT/timeline_${d}_b1.json" \
      > "$OUT/timeline_${d}_b1.txt" 2>&1
    grep -E "^profile|^by category|^step|^decode" "$OUT/timeline_${d}_b1.txt"
  done
  pf_ab skinny_d16 fast,fast-skinny50,fast-skinny72,fast --depths 16 --batches 1
  pf_ab skinny_d24 fast,fast-skinny50,fast-skinny72,fast --depths 24 --batches 1
fi

if [ "${1:-a}" = d ]; then
  timeout 200 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -k "skinny or greedy or graph_replay" \
    > "$OUT/gpu_tests_d.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_d.log" | tail -8
  timeout 150 python3 -m flexvar.bench.profile_fast --depth d16 --graph --timeline "$OUT/timeline_d16_b1.json" \
    > "$OUT/timeline_d16_b1.txt" 2>&1
  grep -E "^profile|^by category|^step|^decode" "$OUT/timeline_d16_b1.txt"
  pf_ab sum_d16 fast-skinny0,fast,fast-skinny50,fast-skinny72,fast-skinny128 --depths 16 --batches 1
  pf_ab sum_d24 fast-skinny0,fast,fast-skinny50,fast-skinny72,fast-skinny128 --depths 24 --batches 1
fi
if [ "${1:-a}" = e ]; then
  pf_ab persist_d24 fast-nopersist-skinny32,fast-nopersist,fast,fast-skinny32 --depths 24 --batches 1
  pf_ab persist_d16 fast-nopersist-skinny32,fast-nopersist,fast --depths 16 --batches 1
  timeout 250 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -k "skinny or greedy or graph_replay \
or first_step" > "$OUT/gpu_tests_e.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_e.log" | tail -8
fi
if [ "${1:-a}" = f ]; then
  pf_ab splitkv_d16 fast-nosplitkv,fast,fast-nosplitkv,fast --depths 16 --batches 1
  pf_ab splitkv_d24 fast-nosplitkv,fast,fast-nosplitkv,fast --depths 24 --batches 1
  timeout 200 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -k "split_keys or attend_step" \
    > "$OUT/gpu_tests_f.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_f.log" | tail -8
fi
if [ "${1:-a}" = g ]; then
  final_runs
elif [ "${1:-a}" = h ]; then
  timeout 560 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider > "$OUT/gpu_tests_h.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_h.log" | tail -8
fi
