#!/usr/bin/env bash
# One device call: (1) a one-layer AOTInductor CUDA package loaded in fresh processes after different
# preparations (bench/gpu/aoti_load_probe.py), with what the wrapper library links and exports and the
# locales the machine has; (2) the bf16 onnxruntime engine (float32 tokenizer graphs) against float32.
#   PYTHONPATH=/tmp/site bash bench/gpu/aoti_locale_probe.sh
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}; L="$OUT/logs"; mkdir -p "$L"
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$L/pip.log" 2>&1 || tail -5 "$L/pip.log"
echo "env: LC_ALL=${LC_ALL:-} LANG=${LANG:-} LC_CTYPE=${LC_CTYPE:-}; locales: $(locale -a 2>&1 | tr '\n' ' ')"
gcc -shared -fPIC -O1 -o /tmp/segv.so bench/gpu/segv_backtrace.c 2>/dev/null
P=bench/gpu/aoti_load_probe.py
timeout 120 python3 $P trivial /tmp/pt > "$L/trivial.log" 2>&1; echo "trivial export rc=$?"
mkdir -p /tmp/pz && (cd /tmp/pz && python3 -m zipfile -e /tmp/pt/decoder-trivial.pt2 .) && W=$(find /tmp/pz -name "*.so" | head -1) &&
  { readelf -d "$W" | grep -E "NEEDED|RPATH|RUNPATH"; echo "defined dynamic symbols: $(nm -D --defined-only "$W" | wc -l), std:: $(nm -D --defined-only "$W" | grep -c St)";
    nm -D --defined-only "$W" | c++filt | grep -E "codecvt|locale|collate" | head -8; g++ --version | head -1; } 2>&1 | tee "$L/wrapper.txt" | head -20
for v in bare bare+cxxlocale setenv setlocale ort lcall lcutf; do
  case $v in lcall) E="LC_ALL=C"; w=cxxlocale;; lcutf) E="LC_ALL=C.UTF-8"; w=cxxlocale;; *) E=""; w=$v;; esac
  env $E LD_PRELOAD=/tmp/segv.so timeout 60 python3 $P load /tmp/pt $w > "$L/load_$v.log" 2>&1
  echo "load $v rc=$? :: $(grep -h "setlocale(" "$L/load_$v.log" | cut -c1-60) :: $(tail -1 "$L/load_$v.log" | cut -c1-110)"
done
grep -h -m1 -B2 -A12 "native stack" "$L/load_bare.log" | cut -c1-220 | head -16
timeout 240 python3 -m flexvar.bench.precision --depth d16 --batch 16 --backends onnxruntime --engine-dtypes bf16 \
  --dtypes fp16 --out "$OUT/precision_ort_bf16.json" 2>&1 | grep -E "^precision|Error" | tail -4
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$L"
