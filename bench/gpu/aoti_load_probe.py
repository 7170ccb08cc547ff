"""Which process state makes `torch._inductor.aoti_load_package` of a CUDA package crash?

    python bench/gpu/aoti_load_probe.py export DIR [tiny|d16] [fp32|fp16]   # export only, no load
    python bench/gpu/aoti_load_probe.py trivial DIR                                  # a one-layer package
    python bench/gpu/aoti_load_probe.py load DIR VARIANT                    # fresh process: prepare, load, run

VARIANT joins with '+': bare (nothing first), cuda (CUDA context first), onnx (import onnx),
ort (import onnxruntime), ortsess (an onnxruntime session on a step ONNX file of DIR),
kernels (flexvar's JIT kernels), onnxexport (the ONNX export of the tiny preset into a scratch dir),
preload (the system libstdc++ loaded RTLD_GLOBAL before torch), setenv (LC_ALL=C in os.environ),
setlocale (C setlocale(LC_ALL, "C")), promote (flexvar.engines.aoti.libstdcxx_global()), cxxlocale (print the C locale), inductor (torch._inductor imported
first, e.g. before ort). PROBE_ONLY=decoder loads only the decoder package.
"""
import ctypes
import glob
import importlib
import os
import sys
import tempfile

if len(sys.argv) > 3 and "preload" in sys.argv[3].split("+"):
    ctypes.CDLL("libstdc++.so.6", mode=ctypes.RTLD_GLOBAL)

import torch  # noqa: E402

DEV = os.environ.get("PROBE_DEVICE", "cuda")


def export_trivial(d):
    """A one-layer CUDA package: every AOTInductor model parses its device string when constructed."""
    from torch.export import export as texport
    os.makedirs(d, exist_ok=True)
    m = torch.nn.Linear(8, 8).to(DEV)
    ep = texport(m, (torch.randn(2, 8, device=DEV),))
    torch._inductor.aoti_compile_and_package(ep, package_path=os.path.join(d, "decoder-trivial.pt2"))
    print("exported", flush=True)


def export(d, preset, prec):
    from flexvar.config import FlexVARConfig, VQVAEConfig
    from flexvar.export import export_onnx
    from flexvar.export.aoti import export_aoti
    from flexvar.export.graphs import make_buckets
    from flexvar.random_weights import random_tokenizer, random_transformer
    dt = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[prec]
    model = random_transformer(FlexVARConfig.from_name(preset), seed=0, device=DEV).to(dt)
    vae = random_tokenizer(VQVAEConfig.from_name("tiny" if preset == "tiny" else "vq16"), seed=1, device=DEV).to(dt)
    m = export_onnx(model, vae, d, log=print)
    export_aoti(model, vae, d, m, buckets=make_buckets((4096,)), log=print, encoder=False)
    print("exported", flush=True)


def load(d, variant):
    parts = variant.split("+")
    if "inductor" in parts:
        importlib.import_module("torch._inductor")
    if "cuda" in parts:
        torch.zeros(1, device=DEV)
    if "promote" in parts:  # flexvar's fix: the shared libstdc++ into the global scope
        from flexvar.engines.aoti import libstdcxx_global
        print("libstdcxx_global:", libstdcxx_global(), flush=True)
    if "setenv" in parts:
        os.environ["LC_ALL"] = "C"
    libc = ctypes.CDLL(None)
    libc.setlocale.restype, libc.setlocale.argtypes = ctypes.c_char_p, [ctypes.c_int, ctypes.c_char_p]
    if "setlocale" in parts:
        libc.setlocale(6, b"C")  # LC_ALL
    if "cxxlocale" in parts:
        print("setlocale(LC_ALL, NULL) =", libc.setlocale(6, None), flush=True)
    if "onnx" in parts:
        import onnx  # noqa: F401
    if "ort" in parts or "ortsess" in parts:
        import onnxruntime as ort
        if "ortsess" in parts:
            f = sorted(glob.glob(os.path.join(d, "decoder-*.onnx")))[0]
            ort.InferenceSession(f, providers=["CPUExecutionProvider"])
    if "kernels" in parts:
        import flexvar.kernels as K
        print("kernels:", K.load(), flush=True)
    if "onnxexport" in parts:
        from flexvar.config import FlexVARConfig, VQVAEConfig
        from flexvar.export import export_onnx
        from flexvar.random_weights import random_tokenizer, random_transformer
        model = random_transformer(FlexVARConfig.from_name("tiny"), seed=5, device=DEV)
        vae = random_tokenizer(VQVAEConfig.from_name("tiny"), seed=6, device=DEV)
        export_onnx(model, vae, tempfile.mkdtemp(), log=lambda *a: None)
    with open("/proc/self/maps") as f:
        libs = sorted({line.split()[-1] for line in f if "libstdc++" in line or "libgcc_s" in line})
    print("loaded:", " ".join(libs), "| LC_ALL/LC_CTYPE/LANG", os.environ.get("LC_ALL"), os.environ.get("LC_CTYPE"), os.environ.get("LANG"), flush=True)
    only = os.environ.get("PROBE_ONLY", "")
    for p in sorted(glob.glob(os.path.join(d, f"{only}*.pt2"))):
        print("load", os.path.basename(p)[:40], flush=True)
        m = torch._inductor.aoti_load_package(p)
        if os.path.basename(p).startswith("decoder"):
            out = m(torch.randn(2, 8, device=DEV) if "trivial" in p else torch.randint(0, 16, (1, 3, 4), device=DEV))
            torch.cuda.synchronize() if DEV == "cuda" else None
            print("ran decoder", tuple((out[0] if isinstance(out, (list, tuple)) else out).shape), flush=True)
    print("probe ok:", variant, flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "trivial":
        export_trivial(sys.argv[2])
    elif sys.argv[1] == "export":
        export(sys.argv[2], *(sys.argv[3:5] or ["tiny", "fp32"]))
    else:
        load(sys.argv[2], sys.argv[3])
