#!/usr/bin/env bash
# Session 17 device calls: the decoder's nearest x2 + 3x3 convolutions from folded filters and its residual sums
# formed by the GroupNorm op (`fast_decoder`), and step 2 at d24 through the per-block path.
#   bash bench/gpu/s17.sh a  # the decoder's GPU tests; d16 256-10 batch 32: fast with the upsampling as written
#                           # (upnear) / four 2x2 phase convolutions (upph) / the residual sums apart (noadd) / the
#                           # defaults (one transposed convolution, sums in the GroupNorm), alternated in one process
#   bash bench/gpu/s17.sh b  # batch 1: d24 eager, fast-upnear, fast, fast-rows2 (step 2 through the per-block path,
#                           # not `small_step`), alternated in one process; d16 fast-upnear, fast
#   bash bench/gpu/s17.sh p  # the decode's kernels by name (graph replay), d16 batch 32 and 1, as written / transposed
#   bash bench/gpu/s17.sh c  # every test of tests/test_gpu.py but those a ran
#   bash bench/gpu/s17.sh f  # final_runs (d16 and d24 256-10, eager and fast, bench.precision)
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}
. bench/gpu/setup.sh
bench_ab() {  # bench_ab NAME ARGS...: 256-10, fp16, with the stage breakdown, one process
  local name=$1; shift
  (cd /tmp && timeout 300 python3 -m flexvar bench --dtype fp16 --schedules 256-10 "$@" --out "$OUT/${name}.json" 2>&1 \
    | grep -E "^bench: ran|^\||rror")
}
DECODER_TESTS="folded or upsample or group_norm or product_attention"
case "${1:-a}" in
a)
  timeout 200 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -k "$DECODER_TESTS" \
    > "$OUT/gpu_tests_a.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_a.log" | tail -8
  bench_ab dec_d16_b32 --depths 16 --batches 32 \
    --impls eager,fast-upnear,fast-upph,fast-noadd,fast,fast-upnear,fast-upph,fast-noadd,fast --repeat 11 ;;
b)
  bench_ab dec_rows_d24 --depths 24 --batches 1 \
    --impls eager,fast-upnear,fast,fast-rows2,fast-upnear,fast,fast-rows2 --repeat 15
  bench_ab dec_d16_b1 --depths 16 --batches 1 --impls fast-upnear,fast,fast-upnear,fast --repeat 15 ;;
p)
  for b in 32 1; do for m in nearest transpose; do
    timeout 150 python3 -m flexvar.bench.profile_fast --depth d16 --batch $b --graph --decode-kernels --rows 0 \
      --upsample $m 2>&1 | grep -vE "Warning|warn_once|^-|Name|^$|Self" > "$OUT/decode_kernels_b${b}_$m.txt"
    head -14 "$OUT/decode_kernels_b${b}_$m.txt"
  done; done ;;
c)
  timeout 420 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -k "not ($DECODER_TESTS)" \
    > "$OUT/gpu_tests_c.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_c.log" | tail -8 ;;
f)
  final_runs ;;
esac
cp "${FLEXVAR_KERNELS_CACHE:-$HOME/.cache/flexvar/kernels}/lt_algos.json" "$OUT/lt_algos.json" 2>/dev/null
exit 0
