#!/usr/bin/env bash
# Device calls written in sessions 20-23 (p, t, f in session 20; q and m in session 21; c in session 23): where batch
# 32's remaining ms to 500 img/s could come from (bench/NOTES.md, "Session 20" to "Session 23"). Sessions 21 and 22
# got no machine. What ran (session 23, H100, one machine; results bench/results/2026-12-07_h100_*_s23.*): c, then
#   . bench/gpu/setup.sh; gpu_tests orders 60 "group_norm_program_orders"; gpu_tests attn_kernel 60 "attention_kernel"
#   (cd /tmp && timeout 150 python3 "$OLDPWD/bench/gpu/gemm_template_probe.py" --steps 7,8,9,10 ...)  # reached step 7
#   gpu_tests rest 270 "not (attention_kernel or attend_step_kernel or triton_attention or guided_sample or taps or
#     group_norm)"; save_lt_algos
# and the rest's remaining tests by name (`python3 -m pytest -m gpu tests/test_gpu.py -k "fp32_greedy_identical or
# low_precision_logits_near or lt_gemms_near_aten or graph_replay_equals_eager_bf16 or inpaint_with_cuda_graphs or
# lt_linear or lt_tune_saves"`). Not run yet: p (the profile; the GEMM probe over steps 5-10), f with L2_ORDER on.
#   bash bench/gpu/s21.sh p  # the batch-32 graph replay's kernels by name, its decode's kernels, its per-step timeline
#                           # (last profiled in session 12); then the GEMM probe (bench/gpu/gemm_template_probe.py):
#                           # each per-block GEMM of steps 5-10 at batch 32, tuned cuBLASLt against Inductor's
#                           # max-autotune at the same fixed shape
#   bash bench/gpu/s21.sh t  # the tests session 20 did not run on its code: the `attend` kernel's, then the rest of
#                           # tests/test_gpu.py but the attention, sampling and GroupNorm-taps ones
#   bash bench/gpu/s21.sh f  # final_runs (d16 and d24 256-10, eager and fast, bench.precision)
#   bash bench/gpu/s21.sh q  # one 600 s call for when machines are scarce (session 21): the GroupNorm op's GPU tests
#                           # (with the new program order, `group_norm.L2_ORDER`), the batch-32 decode in both
#                           # orders (decode_chunk_probe.py, alternated), the profile, the GEMM probe over steps 7-10
#                           # only (87 % of batch 32's GEMM rows), the `attend` tests
#   bash bench/gpu/s21.sh m  # the least of q (~3-4 minutes): the GroupNorm kernel tests (both orders) and the decode A/B
#   bash bench/gpu/s21.sh c  # session 23's first call: m's GroupNorm tests, final_runs with d24 at batch 1 (the committed
#                           # tree's numbers and bench.precision's margin rows), then m's decode A/B
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}
export PYTHONUNBUFFERED=1
. bench/gpu/setup.sh
case "${1:-p}" in
p)
  (cd /tmp && timeout 200 python3 -m flexvar.bench.profile_fast --depth d16 --batch 32 --graph --decode-kernels \
    --rows 45 --timeline "$OUT/timeline_b32.json" 2>&1 | grep -vE "Warning|warn_once|^-|^$" > "$OUT/profile_b32.txt")
  head -3 "$OUT/profile_b32.txt"; grep -E "^step|^decode" "$OUT/profile_b32.txt"
  (cd /tmp && timeout 330 python3 "$OLDPWD/bench/gpu/gemm_template_probe.py" 2>&1 | grep -vE "Warn|warn" \
    | tee "$OUT/gemm_probe.log") ;;
t)
  gpu_tests attn_kernel 120 "attention_kernel"
  gpu_tests rest 450 "not (attention_kernel or attend_step_kernel or triton_attention or guided_sample or taps)" ;;
f)
  final_runs ;;
q)
  gpu_tests gn 90 "group_norm"
  (cd /tmp && timeout 90 python3 "$OLDPWD/bench/gpu/decode_chunk_probe.py" --variants 32:op1,32:op0,32:op1,32:op0,32:op1,32:op0 \
    2>&1 | grep -E "^B=|rror" | tee "$OUT/decode_l2_order.log")
  (cd /tmp && timeout 130 python3 -m flexvar.bench.profile_fast --depth d16 --batch 32 --graph --decode-kernels \
    --rows 45 --timeline "$OUT/timeline_b32.json" 2>&1 | grep -vE "Warning|warn_once|^-|^$" > "$OUT/profile_b32.txt")
  head -3 "$OUT/profile_b32.txt"; grep -E "^step|^decode" "$OUT/profile_b32.txt"
  (cd /tmp && timeout 150 python3 "$OLDPWD/bench/gpu/gemm_template_probe.py" --steps 7,8,9,10 2>&1 \
    | grep -vE "Warn|warn" | tee "$OUT/gemm_probe.log")
  gpu_tests attn_kernel 50 "attention_kernel" ;;
m)  # the least of q: the GroupNorm tests and the two orders' decode
  gpu_tests gn 100 "group_norm_program_orders or group_norm_silu_kernel or take_bias or group_norm_silu_taps_kernel"
  (cd /tmp && timeout 80 python3 "$OLDPWD/bench/gpu/decode_chunk_probe.py" --variants 32:op1,32:op0,32:op1,32:op0 \
    2>&1 | grep -E "^B=|rror" | tee "$OUT/decode_l2_order.log") ;;
c)  # m's tests, the final runs, m's A/B
  gpu_tests gn 100 "group_norm_program_orders or group_norm_silu_kernel or take_bias or group_norm_silu_taps_kernel"
  final_runs 1
  (cd /tmp && timeout 80 python3 "$OLDPWD/bench/gpu/decode_chunk_probe.py" --variants 32:op1,32:op0,32:op1,32:op0 \
    2>&1 | grep -E "^B=|rror" | tee "$OUT/decode_l2_order.log") ;;
esac
save_lt_algos
exit 0
