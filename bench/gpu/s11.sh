#!/usr/bin/env bash
# Session 11 device calls.
#   bash bench/gpu/s11.sh a   # attend_step with separate cache-write programs and key splits: the attention GPU
#                            # tests and the runtime's; per-step micro-benchmark (new with every split count, the
#                            # previous attend_step from old/, qk_norm_cache + attend); d16 batch 1 and 32, d24
#                            # batch 1 against 8ef24a7 (carried as old/) in the same call (a ran with the key splits,
#                            # removed after it; the GPU tests ran past their time limit: too many compiles)
#   bash bench/gpu/s11.sh b   # attend_step with separate cache-write programs (no splits): all of tests/test_gpu.py;
#                            # per-step micro-benchmark against 8ef24a7's attend_step (old/) and qk_norm_cache + attend
#   bash bench/gpu/s11.sh c   # guided_sample's persistent kernel (next row staged by cp.async): its GPU tests and the
#                            # runtime's; the sampling probe by part, new and 8ef24a7 (old/, kernels built apart in
#                            # /tmp/oldk); d16 batch 1 and 32, d24 batch 1, new and old, in the same call (c ran with the
#                            # persistent kernel from 1 row per SM on; from 4 rows per SM on after it)
#   bash bench/gpu/s11.sh d   # guided_sample's GPU tests; d16 256 px, 6/8/10/13 steps, batch 1/8/32/64, eager and fast
#   bash bench/gpu/s11.sh e   # d16 384-11, 512-12 and 1:2 (256x512, 10 steps), batch 1/32, eager and fast; d20 256-10
#   bash bench/gpu/s11.sh f   # the final runtime, eager and fast in one run: d16 256-10 (with the stage breakdown), d24;
#                            # bench.precision (bf16, fp16)
#   bash bench/gpu/s11.sh g   # after the review (the persistent kernel's static shared memory read from the kernel):
#                            # the guided_sample tests; the CUDA C++ host test (it embeds the changed kernel library)
#   bash bench/gpu/s11.sh h   # kernels of a graph replay of the final runtime by name, d16 batch 1 and 32 (profiles/)
#   bash bench/gpu/s11.sh i   # after the second review (sampling tests sized by the SM count, the kernel's attributes
#                            # read only for the persistent mode, profile_fast's kernel list built once): the
#                            # guided_sample and graph-replay tests; profile_fast --decode-kernels --timeline at batch 1
set -uo pipefail
# (the set-up below, shared since session 11's review, is the one these calls ran with)
. bench/gpu/setup.sh
if [ "${1:-a}" = a ]; then
  timeout 200 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider \
    -k "attend_step or attention_kernel or triton_attention or greedy or graph_replay" > "$L/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error|error" "$L/gpu_tests.log" | tail -12
  timeout 120 python3 -m flexvar.bench.attn_backends --backends step,step-old,qknorm --old-kernels old/kernels \
    --sweep 2>&1 | tee "$OUT/attn_step.log"
  timeout 60 python3 -m flexvar.bench.attn_backends --backends step,step-old --old-kernels old/kernels --heads 24 \
    --batches 1 --sweep 2>&1 | tee "$OUT/attn_step_h24.log"
  timeout 150 flexvar bench --dtype fp16 --depths 16 --batches 1,32 --schedules 256-10 --impls fast --repeat 9 \
    --no-breakdown --out "$OUT/ab_a_d16.json" 2>&1 | grep -E "^bench: ran|^\||rror"
  oldpkg
  (cd /tmp && PYTHONPATH=/tmp/oldpkg timeout 110 python3 -m flexvar bench --dtype fp16 --depths 16 --batches 1,32 \
    --schedules 256-10 --impls fast --repeat 9 --no-breakdown --out "$OUT/ab_a_d16_old.json" 2>&1 \
    | grep -E "^bench: ran|^\||rror")
  timeout 100 flexvar bench --dtype fp16 --depths 24 --batches 1 --schedules 256-10 --impls fast --repeat 9 \
    --no-breakdown --out "$OUT/ab_a_d24.json" 2>&1 | grep -E "^bench: ran|^\||rror"
  (cd /tmp && PYTHONPATH=/tmp/oldpkg timeout 80 python3 -m flexvar bench --dtype fp16 --depths 24 --batches 1 \
    --schedules 256-10 --impls fast --repeat 9 --no-breakdown --out "$OUT/ab_a_d24_old.json" 2>&1 \
    | grep -E "^bench: ran|^\||rror")
elif [ "$1" = b ]; then
  timeout 380 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider > "$OUT/gpu_tests.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests.log" | tail -8
  timeout 60 python3 -m flexvar.bench.attn_backends --backends step,step-old,qknorm --old-kernels old/kernels \
    2>&1 | tee "$OUT/attn_step.log"
elif [ "$1" = c ]; then
  oldpkg
  (cd /tmp && FLEXVAR_KERNELS_CACHE=/tmp/oldk PYTHONPATH=/tmp/oldpkg python3 -c "import flexvar.kernels as K; K.load()" \
    > "$L/old_build.log" 2>&1) &
  timeout 200 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider \
    -k "guided_sample or greedy or graph_replay" > "$OUT/gpu_tests_c.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_c.log" | tail -8
  wait
  python3 bench/gpu/sample_probe.py 2>&1 | sed 's/^/new /' | tee "$OUT/sample_probe.log"
  (cd /tmp && FLEXVAR_KERNELS_CACHE=/tmp/oldk PYTHONPATH=/tmp/oldpkg python3 "$OLDPWD/bench/gpu/sample_probe.py" 2>&1) \
    | sed 's/^/old /' | tee -a "$OUT/sample_probe.log"
  for run in new old; do
    if [ $run = new ]; then pre=""; else pre="env FLEXVAR_KERNELS_CACHE=/tmp/oldk PYTHONPATH=/tmp/oldpkg"; fi
    (cd /tmp && $pre timeout 120 python3 -m flexvar bench --dtype fp16 --depths 16 --batches 1,32 --schedules 256-10 \
      --impls fast --repeat 9 --no-breakdown --out "$OUT/ab_c_d16_$run.json" 2>&1 | grep -E "^bench: ran|^\||rror")
  done
  for run in new old; do
    if [ $run = new ]; then pre=""; else pre="env FLEXVAR_KERNELS_CACHE=/tmp/oldk PYTHONPATH=/tmp/oldpkg"; fi
    (cd /tmp && $pre timeout 90 python3 -m flexvar bench --dtype fp16 --depths 24 --batches 1 --schedules 256-10 \
      --impls fast --repeat 9 --no-breakdown --out "$OUT/ab_c_d24_$run.json" 2>&1 | grep -E "^bench: ran|^\||rror")
  done
elif [ "$1" = d ]; then
  timeout 120 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -k "guided_sample" \
    > "$L/gpu_tests_d.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$L/gpu_tests_d.log" | tail -8
  timeout 400 flexvar bench --dtype fp16 --depths 16 --batches 1,8,32,64 --schedules '256-6;256-8;256-10;256-13' \
    --impls eager,fast --repeat 5 --no-breakdown --out "$OUT/d16_256px.json" 2>&1 | grep -E "^bench: ran|^\||rror"
elif [ "$1" = e ]; then
  timeout 330 flexvar bench --dtype fp16 --depths 16 --batches 1,32 \
    --schedules '384-11;512-12;1x2,2x4,3x6,4x8,5x10,6x12,8x16,10x20,13x26,16x32' --impls eager,fast --repeat 5 \
    --no-breakdown --out "$OUT/d16_384_512_wide.json" 2>&1 | grep -E "^bench: ran|^\||rror"
  timeout 160 flexvar bench --dtype fp16 --depths 20 --batches 1,32 --schedules 256-10 --impls eager,fast \
    --repeat 5 --no-breakdown --out "$OUT/d20.json" 2>&1 | grep -E "^bench: ran|^\| d|rror"
elif [ "$1" = f ]; then
  timeout 200 flexvar bench --dtype fp16 --depths 16 --batches 1,32 --schedules 256-10 --impls eager,fast \
    --repeat 7 --out "$OUT/final_d16_256_10.json" 2>&1 | grep -E "^bench: ran|^\| d|rror"
  timeout 170 flexvar bench --dtype fp16 --depths 24 --batches 1,32 --schedules 256-10 --impls eager,fast \
    --repeat 5 --no-breakdown --out "$OUT/final_d24.json" 2>&1 | grep -E "^bench: ran|^\| d|rror"
  timeout 130 python3 -m flexvar.bench.precision --depth d16 --batch 8 --dtypes bf16,fp16 \
    --out "$OUT/precision_d16.json" 2>&1 | tail -8
elif [ "$1" = g ]; then
  timeout 100 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -k "guided_sample or graph_replay" \
    > "$OUT/gpu_tests_g.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_g.log" | tail -8
  timeout 420 python3 -m pytest -m gpu tests/test_gpu_host.py -q -p no:cacheprovider > "$OUT/gpu_host.log" 2>&1
  echo "host tests rc=$?"; grep -E "passed|failed|Error|skipped" "$OUT/gpu_host.log" | tail -6
elif [ "$1" = h ]; then
  for b in 1 32; do
    timeout 200 python3 -m flexvar.bench.profile_fast --depth d16 --batch $b --graph --rows 45 2>&1 \
      | grep -vE "Warning|warn_once" > "$OUT/graph_b$b.txt"
    grep -E "^profile|^by cat" "$OUT/graph_b$b.txt"
  done
elif [ "$1" = i ]; then
  timeout 150 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -k "guided_sample or graph_replay" \
    > "$OUT/gpu_tests_i.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_i.log" | tail -8
  timeout 200 python3 -m flexvar.bench.profile_fast --depth d16 --batch 1 --graph --rows 0 --decode-kernels \
    --timeline /tmp/timeline.json 2>&1 | grep -E "^profile|^decode|^step|^  " | head -20
fi
