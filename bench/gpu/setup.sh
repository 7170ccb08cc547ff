# Sourced by the session scripts (bench/gpu/s9.sh to s15.sh) on the device machine, from the repository
# root: $OUT and $L (logs), the package installed in place, the CUDA kernels built once; `oldpkg` copies a
# carried old/ checkout (`git archive REV flexvar kernels bench export engines`) into /tmp/oldpkg as the
# package layout, for A/B runs with PYTHONPATH=/tmp/oldpkg in the same call; `ab NAME ARGS...` runs one such
# A/B of the fast runtime (since session 12; the earlier scripts spell their A/B runs out, as they ran);
# `schedule_tables` runs the README's schedule table, eager and fast (since session 13; s8 and s11 spell it out);
# `final_runs` the final d16/d24 256-10 runs and bench.precision (since session 15); `bench_ab` one 256-10 run of
# several implementations in one process, `gpu_tests` a selection of the GPU tests ($GPU_TESTS) and `save_lt_algos` the tuned
# GEMM choices (since session 17).
OUT=${OUT:-/tmp/flexvar-out}; L="$OUT/logs"; mkdir -p "$L"
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$L/pip.log" 2>&1 || tail -5 "$L/pip.log"
python3 -c "import flexvar.kernels as K; print('kernels built:', K.load())" 2>&1 | tail -3
oldpkg() {
  rm -rf /tmp/oldpkg && mkdir -p /tmp/oldpkg/flexvar && cp -r old/flexvar/* /tmp/oldpkg/flexvar/ \
    && for d in kernels bench export engines; do cp -r old/$d /tmp/oldpkg/flexvar/$d; done
}
ab() {  # ab NAME ARGS...: `flexvar bench ARGS` (256-10, fast) on this checkout, then on old/ (its kernels built apart
        # in /tmp/oldk), in this call: $OUT/ab_NAME_new.json and ..._old.json
  local name=$1; shift
  oldpkg
  for run in new old; do
    if [ $run = new ]; then pre=""; else pre="env FLEXVAR_KERNELS_CACHE=/tmp/oldk PYTHONPATH=/tmp/oldpkg"; fi
    (cd /tmp && $pre timeout 150 python3 -m flexvar bench --dtype fp16 --schedules 256-10 --impls fast --repeat 9 \
      --no-breakdown "$@" --out "$OUT/ab_${name}_$run.json" 2>&1 | grep -E "^bench: ran|^\||rror")
  done
}
schedule_tables() {  # d16 at 256 px, 6-13 steps, batch 1-64; 384-11, 512-12 and 1:2 at batch 1 and 32:
                    # $OUT/d16_256px.json and $OUT/d16_384_512_wide.json (+ .png)
  timeout 220 flexvar bench --dtype fp16 --depths 16 --batches 1,8,32,64 --schedules '256-6;256-8;256-10;256-13' \
    --impls eager,fast --repeat 5 --no-breakdown --out "$OUT/d16_256px.json" 2>&1 | grep -E "^bench: ran|^\||rror"
  timeout 200 flexvar bench --dtype fp16 --depths 16 --batches 1,32 \
    --schedules '384-11;512-12;1x2,2x4,3x6,4x8,5x10,6x12,8x16,10x20,13x26,16x32' --impls eager,fast --repeat 5 \
    --no-breakdown --out "$OUT/d16_384_512_wide.json" 2>&1 | grep -E "^bench: ran|^\||rror"
}
final_runs() {  # final_runs [D24_BATCHES]: d16 and d24 256-10 at batch 1 and 32 (d24 at D24_BATCHES if given: `1`
                # fits one 600 s call), eager and fast in one run each (stage breakdown included):
                # $OUT/final_d16_256_10.json, ..._d24_...; then bench.precision (bf16, fp16): $OUT/precision_d16.json
                # (since session 15; s14.sh c ran the same commands)
  local d24=${1:-1,32}
  for d in 16 24; do
    local batches=1,32 limit=240
    if [ $d = 24 ]; then batches=$d24; [ "$d24" = 1 ] && limit=150; fi
    timeout $limit flexvar bench --dtype fp16 --depths $d --batches $batches --schedules 256-10 --impls eager,fast \
      --repeat 7 --out "$OUT/final_d${d}_256_10.json" 2>&1 | grep -E "^bench: ran|^\| d|rror"
  done
  timeout 130 python3 -m flexvar.bench.precision --depth d16 --batch 8 --dtypes bf16,fp16 \
    --out "$OUT/precision_d16.json" 2>&1 | tail -4
}

bench_ab() {  # bench_ab NAME SECONDS ARGS...: `flexvar bench` 256-10, fp16, with the stage breakdown, one process:
              # $OUT/NAME.json (+ .png)
  local name=$1 limit=$2; shift 2
  (cd /tmp && timeout "$limit" python3 -m flexvar bench --dtype fp16 --schedules 256-10 "$@" --out "$OUT/${name}.json" \
    2>&1 | grep -E "^bench: ran|^\||rror")
}
GPU_TESTS="tests/test_gpu_kernels.py tests/test_gpu_decoder.py tests/test_gpu_runtime.py"  # tests/test_gpu.py until session 23
gpu_tests() {  # gpu_tests NAME SECONDS EXPR: the tests of $GPU_TESTS that -k EXPR selects: $OUT/gpu_tests_NAME.log
  timeout "$2" python3 -m pytest -m gpu $GPU_TESTS -q -p no:cacheprovider -k "$3" > "$OUT/gpu_tests_$1.log" 2>&1
  echo "gpu tests $1 rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_$1.log" | tail -8
}
save_lt_algos() {  # the cuBLASLt choices this machine tuned: $OUT/lt_algos.json
  cp "${FLEXVAR_KERNELS_CACHE:-$HOME/.cache/flexvar/kernels}/lt_algos.json" "$OUT/lt_algos.json" 2>/dev/null
}
