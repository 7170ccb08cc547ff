#!/usr/bin/env bash
# One device call (onnxruntime-gpu unpacked into /tmp/site by the gw calls of ../shared/hooks/gpu-wheels.sh):
#  - where loading an AOTInductor CUDA package from Python crashes (bench/gpu/aoti_load_probe.py);
#  - d16 engines exported once per precision under $R (ONNX + AOTInductor, in parallel);
#  - bf16/fp16 agreement of onnxruntime (CUDA EP), AOTInductor and the fast runtime with float32;
#  - fp16 latency of the engines next to the fast runtime and the eager sampler, in one run.
#   PYTHONPATH=/tmp/site bash bench/gpu/engines_precision.sh
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}; L="$OUT/logs"; mkdir -p "$L"
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$L/pip.log" 2>&1 || tail -5 "$L/pip.log"
python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
R=/tmp/eng; P=bench/gpu/aoti_load_probe.py
gcc -shared -fPIC -O1 -o /tmp/segv.so bench/gpu/segv_backtrace.c 2>/dev/null
( python3 -c "import flexvar.kernels as K; print('kernels built:', K.load())" > "$L/kernels.log" 2>&1 ) &
( timeout 330 python3 $P export $R/d16-float16 d16 fp16 > "$L/export_fp16.log" 2>&1; echo "rc=$?" >> "$L/export_fp16.log" ) &
( timeout 330 python3 $P export $R/d16-bfloat16 d16 bf16 > "$L/export_bf16.log" 2>&1; echo "rc=$?" >> "$L/export_bf16.log" ) &
timeout 150 python3 $P export /tmp/pa tiny fp32 > "$L/export_tiny.log" 2>&1; echo "export tiny rc=$?"
for v in bare preload inductor+ort lcall; do
  if [ $v = lcall ]; then E="LC_ALL=C PYTHONCOERCECLOCALE=0"; w=bare; else E=""; w=$v; fi
  env $E PROBE_ONLY=decoder LD_PRELOAD=/tmp/segv.so timeout 60 python3 $P load /tmp/pa $w > "$L/load_$v.log" 2>&1
  echo "load $v rc=$? :: $(grep loaded: "$L/load_$v.log" | cut -c1-120) :: $(tail -1 "$L/load_$v.log" | cut -c1-100)"
done
mkdir -p /tmp/pz && (cd /tmp/pz && python3 -m zipfile -e /tmp/pa/decoder-*.pt2 . ) && W=$(find /tmp/pz -name "*.so" | head -1) &&
  { ldd "$W" | grep -E "stdc|gcc_s|not found"; echo "std:: exported: $(nm -D --defined-only "$W" | grep -c St)"; nm -D --defined-only "$W" | c++filt | grep -E "codecvt|locale::|collate" | head -5; g++ --version | head -1; } > "$L/wrapper.txt" 2>&1
cat "$L/wrapper.txt"
wait
tail -qn1 "$L"/export_fp16.log "$L"/export_bf16.log "$L/kernels.log"
timeout 200 python3 -m flexvar.bench.precision --depth d16 --batch 16 --backends onnxruntime,aoti,fast --dtypes bf16,fp16 \
  --engine-dir $R --out "$OUT/precision_engines.json" 2>&1 | grep -E "^precision|Error" | tail -12
timeout 170 flexvar bench --dtype fp16 --depths 16 --batches 1,32 --schedules 256-10 --impls eager,fast,onnxruntime,aoti \
  --repeat 5 --no-breakdown --engine-dir $R --out "$OUT/engines_fp16.json" 2>&1 | grep -E "^bench|^\| d" | tail -10
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$L"
