# Sourced by the session scripts (bench/gpu/s9.sh, s10.sh, s11.sh) on the device machine, from the repository
# root: $OUT and $L (logs), the package installed in place, the CUDA kernels built once; `oldpkg` copies a
# carried old/ checkout (`git archive REV flexvar kernels bench export engines`) into /tmp/oldpkg as the
# package layout, for A/B runs with PYTHONPATH=/tmp/oldpkg in the same call.
OUT=${OUT:-/tmp/flexvar-out}; L="$OUT/logs"; mkdir -p "$L"
python3 -m pip install -q --no-deps --no-build-isolation -e . > "$L/pip.log" 2>&1 || tail -5 "$L/pip.log"
python3 -c "import flexvar.kernels as K; print('kernels built:', K.load())" 2>&1 | tail -3
oldpkg() {
  rm -rf /tmp/oldpkg && mkdir -p /tmp/oldpkg/flexvar && cp -r old/flexvar/* /tmp/oldpkg/flexvar/ \
    && for d in kernels bench export engines; do cp -r old/$d /tmp/oldpkg/flexvar/$d; done
}
