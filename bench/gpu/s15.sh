#!/usr/bin/env bash
# Session 15 device calls.
#   python3 bench/gpu/l2_probe.py --runtime   # (after setup.sh) block GEMMs with weights cold / in L2 / prefetched by
#                            # one-program kernels; the runtime with every block on block 0's weights (L2's upper bound)
#   bash bench/gpu/s15.sh a   # (ran at 40a88f7; its pfN variants were reverted in the next commit) the L2 prefetch: its GPU tests with the greedy, graph-replay, skinny and first-step ones;
#                            # d16 batch 1 with budgets 0 / 12 / 24 MiB in one process
#   bash bench/gpu/s15.sh b   # (not run: d16 was slower) d24 batch 1 with budgets 0 / 24 / 48 / 64 MiB in one process
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
