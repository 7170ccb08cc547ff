#!/usr/bin/env bash
# One device call (onnxruntime-gpu unpacked into /tmp/site by the gw calls of ../shared/hooks/gpu-wheels.sh)
# checking what session 3 could not run:
#  - the libstdc++ promotion (engines/aoti.libstdcxx_global) against the AOTInductor load crash:
#    a one-layer CUDA package loaded in fresh processes, bare (expected to crash) and promoted;
#  - the GPU engine tests (onnxruntime CUDA EP and AOTInductor greedy codes = reference, the plain-process load);
#  - bf16 agreement of the onnxruntime CUDA EP (its bf16 export failed in session 3).
#   PYTHONPATH=/tmp/site bash bench/gpu/engines_s4.sh
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}; L="$OUT/logs"; mkdir -p "$L"
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$L/pip.log" 2>&1 || tail -5 "$L/pip.log"
python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
P=bench/gpu/aoti_load_probe.py
( timeout 420 python3 -m flexvar.bench.precision --depth d16 --batch 16 --backends onnxruntime --engine-dtypes bf16 \
    --engine-dir /tmp/eng --out "$OUT/precision_ort_bf16.json" > "$L/precision.log" 2>&1; echo "rc=$?" >> "$L/precision.log" ) &
timeout 240 python3 $P trivial /tmp/pt > "$L/trivial.log" 2>&1; echo "trivial export rc=$?"
for v in bare promote; do
  PROBE_ONLY=decoder timeout 120 python3 $P load /tmp/pt $v > "$L/load_$v.log" 2>&1
  echo "load $v rc=$? :: $(tail -1 "$L/load_$v.log" | cut -c1-160)"
done
timeout 420 python3 -m pytest -m gpu tests/test_gpu_engines.py -q -rs -p no:cacheprovider > "$L/engine_tests.log" 2>&1
echo "engine tests rc=$?"; tail -4 "$L/engine_tests.log"
wait
grep -E "^precision|Error|rc=" "$L/precision.log" | tail -8
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$L"
