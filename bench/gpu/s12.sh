#!/usr/bin/env bash
# Session 12 device calls.
#   bash bench/gpu/s12.sh a   # batch 32 as one graph against 2 or 4 parts on parallel streams of one graph
#                            # (bench/gpu/overlap_probe.py)
#   bash bench/gpu/s12.sh b   # guidance on the head's input (guided_sample rule "none"): the sampling, greedy,
#                            # graph-replay, teacher-forced and in-painting GPU tests; the conv_out probe
#   bash bench/gpu/s12.sh c   # d16 batch 1 and 32 against d451168 (carried as old/, its kernels built apart in
#                            # /tmp/oldk) in one call
#   bash bench/gpu/s12.sh d   # d24 batch 1 against d451168; the graph replay's kernels at batch 32 (profiles/);
#                            # bench.precision (bf16, fp16)
#   bash bench/gpu/s12.sh e   # (b's tests again, with -x, on the warm machine: b's ran past their time limit while
#                            # compiling)
#   (b-e ran with the head's bias added by torch.addmm(..., out_dtype=float32), which broadcasts it into the output
#   before the GEMM: an elementwise pass over the logits; from f on guided_sample adds the bias as it loads a row)
#   bash bench/gpu/s12.sh f   # all of tests/test_gpu.py
#   bash bench/gpu/s12.sh g   # the CUDA C++ host test (the sampling kernel's C signature gained the bias); d24 batch 1
#                            # against d451168
#   bash bench/gpu/s12.sh h   # d16 batch 1 and 32 against d451168; bench.precision (bf16, fp16)
#   bash bench/gpu/s12.sh i   # the final runtime, eager and fast in one run: d16 256-10 with the stage breakdown
#   bash bench/gpu/s12.sh j   # the guided head input with each half normalised on its own (one fused kernel?):
#                            # the teacher-forced, greedy and graph-replay tests; d16 batch 1 and 32 against e7aac07
#                            # (old/); the batch 1 graph replay's kernels (one kernel instead of two per step, no
#                            # faster: reverted after this call)
#   bash bench/gpu/s12.sh k   # after the review (head_input and guided_head_input share _head_input_f32): the
#                            # teacher-forced, greedy, graph-replay, small_step-graph and in-painting GPU tests
set -uo pipefail
. bench/gpu/setup.sh
if [ "${1:-a}" = a ]; then
  timeout 480 python3 bench/gpu/overlap_probe.py --batches 32 --parts 2,4 --stagger 1,3 2>&1 | grep -v Warning \
    | tee "$OUT/overlap_probe_s12.log" | tail -30
elif [ "$1" = b ]; then
  timeout 240 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -k "guided_sample or greedy or \
graph_replay or small_step_in or low_precision or triton_attention_matches or inpaint" > "$OUT/gpu_tests_b.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_b.log" | tail -8
  timeout 60 python3 bench/gpu/conv_out_probe.py 2>&1 | tee "$OUT/conv_out_probe.log"
elif [ "$1" = c ]; then
  ab d16 --depths 16 --batches 1,32
elif [ "$1" = d ]; then
  ab d24 --depths 24 --batches 1
  timeout 200 python3 -m flexvar.bench.profile_fast --depth d16 --batch 32 --graph --rows 30 2>&1 \
    | grep -vE "Warning|warn_once" > "$OUT/graph_b32.txt"
  grep -E "^profile|^by cat" "$OUT/graph_b32.txt"
  timeout 130 python3 -m flexvar.bench.precision --depth d16 --batch 8 --dtypes bf16,fp16 \
    --out "$OUT/precision_d16.json" 2>&1 | tail -4
elif [ "$1" = e ]; then
  timeout 560 python3 -m pytest -m gpu tests/test_gpu.py -q -x -p no:cacheprovider -k "guided_sample or greedy or graph_replay or small_step_in or low_precision or triton_attention_matches or inpaint" > "$OUT/gpu_tests_e.log" 2>&1
  echo "rc=$?"; tail -5 "$OUT/gpu_tests_e.log"
elif [ "$1" = f ]; then
  timeout 560 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider > "$OUT/gpu_tests_f.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_f.log" | tail -8
elif [ "$1" = g ]; then
  timeout 400 python3 -m pytest -m gpu tests/test_gpu_host.py -q -p no:cacheprovider > "$OUT/gpu_host.log" 2>&1
  echo "host tests rc=$?"; grep -E "passed|failed|Error|skipped" "$OUT/gpu_host.log" | tail -6
  ab d24 --depths 24 --batches 1
elif [ "$1" = h ]; then
  ab d16 --depths 16 --batches 1,32
  timeout 130 python3 -m flexvar.bench.precision --depth d16 --batch 8 --dtypes bf16,fp16 \
    --out "$OUT/precision_d16.json" 2>&1 | tail -4
elif [ "$1" = i ]; then
  timeout 200 flexvar bench --dtype fp16 --depths 16 --batches 1,32 --schedules 256-10 --impls eager,fast \
    --repeat 7 --out "$OUT/final_d16_256_10.json" 2>&1 | grep -E "^bench: ran|^\| d|rror"
elif [ "$1" = j ]; then
  timeout 200 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -k "low_precision or fp32_greedy or \
graph_replay" > "$OUT/gpu_tests_j.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_j.log" | tail -4
  ab head_d16 --depths 16 --batches 1,32
  timeout 120 python3 -m flexvar.bench.profile_fast --depth d16 --batch 1 --graph --rows 80 2>&1 \
    | grep -vE "Warning|warn_once" > "$OUT/graph_b1.txt"
  grep -E "^profile|^by cat" "$OUT/graph_b1.txt"; grep -E "^ *triton" "$OUT/graph_b1.txt" | awk '{print $1, $NF}'
elif [ "$1" = k ]; then
  timeout 300 python3 -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -k "low_precision or fp32_greedy or \
graph_replay or small_step_in or inpaint or triton_attention_matches" > "$OUT/gpu_tests_k.log" 2>&1
  echo "gpu tests rc=$?"; grep -E "passed|failed|Error" "$OUT/gpu_tests_k.log" | tail -4
fi
