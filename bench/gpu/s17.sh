#!/usr/bin/env bash
# Session 17 device calls: the decoder's nearest x2 + 3x3 convolutions as transposed convolutions with folded
# filters, its convolution biases and residual sums added by the GroupNorm op's kernels (`fast_decoder`), and step 2
# at d24 through the per-block path.
#   bash bench/gpu/s17.sh a  # (as run first: the variants of commit 2862f27, table in bench/NOTES.md session 17)
#   bash bench/gpu/s17.sh b  # the decoder's GPU tests; then, each alternated in one process: d16 256-10 batch 32:
#                           # eager, fast-upnear-nofuse (the upsampling as written, biases and sums in passes of their
#                           # own: session 16's runtime), fast-nofuse, fast; d24 batch 1: eager, fast-upnear-nofuse,
#                           # fast, fast-rows2 (step 2 through the per-block path, not `small_step`)
#   bash bench/gpu/s17.sh r  # not run: the runtime's graph-replay and low-precision GPU tests and its float32 greedy ones at 256-10
#   bash bench/gpu/s17.sh p  # not run: the decode's kernels by name (graph replay), d16 batch 32 and 1
#   bash bench/gpu/s17.sh c  # not run: every test of tests/test_gpu.py but those b ran
#   bash bench/gpu/s17.sh f  # not run: final_runs (d16 and d24 256-10, eager and fast, bench.precision)
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}
. bench/gpu/setup.sh
FIRST_TESTS="folded or upsample or group_norm"
case "${1:-b}" in
a)
  echo "part a ran on commit 2862f27 (its variants fast-upph, fast-noadd, fast-noconv are gone)"; exit 1 ;;
b)
  gpu_tests b 150 "$FIRST_TESTS"
  bench_ab dec_d16_b32 100 --depths 16 --batches 32 \
    --impls eager,fast-upnear-nofuse,fast-nofuse,fast,fast-upnear-nofuse,fast-nofuse,fast --repeat 11
  bench_ab dec_rows_d24 130 --depths 24 --batches 1 \
    --impls eager,fast-upnear-nofuse,fast,fast-rows2,fast-upnear-nofuse,fast,fast-rows2 --repeat 11 ;;
r)
  gpu_tests r 150 "graph_replay or low_precision or 256-10" ;;
p)
  for b in 32 1; do
    timeout 150 python3 -m flexvar.bench.profile_fast --depth d16 --batch $b --graph --decode-kernels --rows 0 2>&1 \
      | grep -vE "Warning|warn_once|^-|Name|^$|Self" > "$OUT/decode_kernels_b$b.txt"
    head -24 "$OUT/decode_kernels_b$b.txt"
  done ;;
c)
  gpu_tests c 420 "not ($FIRST_TESTS)" ;;
f)
  final_runs ;;
esac
save_lt_algos
exit 0
