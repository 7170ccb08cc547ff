#!/usr/bin/env bash
# One device call: where does loading an AOTInductor CUDA package from Python crash?  Exports the tiny
# preset once, then loads it in fresh processes after different preparations (bench/gpu/aoti_load_probe.py),
# each twice, with a native-stack SIGSEGV handler preloaded; then the exporting-process case and the
# GPU engine test.  Logs land in $OUT (one tarball).   bash bench/gpu/aoti_probe.sh
set -uo pipefail
OUT=${OUT:-/tmp/flexvar-out}
L="$OUT/logs"; mkdir -p "$L"
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$L/pip.log" 2>&1 || tail -5 "$L/pip.log"
echo "gdb: $(command -v gdb || echo none)"
gcc -shared -fPIC -O1 -o /tmp/segv.so bench/gpu/segv_backtrace.c || echo "no segv helper"
( python3 -c "import flexvar.kernels as K; print('kernels built:', K.load())" > "$L/kernels.log" 2>&1 ) &
KB=$!
P=bench/gpu/aoti_load_probe.py
timeout 200 python3 $P export /tmp/pa tiny fp32 > "$L/export.log" 2>&1; echo "export rc=$?"; ls /tmp/pa | grep pt2
wait $KB; cat "$L/kernels.log" | tail -1
for v in bare cuda onnx ort ortsess kernels onnxexport onnx+ort+ortsess+kernels; do
  for i in 1 2; do
    LD_PRELOAD=/tmp/segv.so timeout 120 python3 $P load /tmp/pa $v > "$L/load_${v}_$i.log" 2>&1
    echo "load $v #$i rc=$? :: $(tail -1 "$L/load_${v}_$i.log")"
  done
done
LD_PRELOAD=/tmp/segv.so timeout 150 python3 bench/gpu/aoti_probe.py /tmp/pb > "$L/same_process.log" 2>&1
echo "export+load in one process rc=$? :: $(tail -1 "$L/same_process.log")"
LD_PRELOAD=/tmp/segv.so timeout 200 python3 -X faulthandler -m pytest -q -x tests/test_gpu_engines.py -k aoti > "$L/engine_tests.log" 2>&1
echo "engine aoti tests rc=$? :: $(tail -1 "$L/engine_tests.log")"
grep -h -A30 "segv_backtrace" "$L"/*.log | head -60
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$L"
