"""The PTX of one Triton kernel of a `kernels/*.py` file for sm_90, compiled without a GPU (Triton's offline
`triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 64))`), with debug sections, `.loc`/`.file` lines and
inlining labels (`$L__tmpN:`) left out: whether a Python-side refactor of a Triton kernel made where no GPU can run
it compiles to the same code. Only the file's Triton part is loaded (the block under `if triton is not None:`), so
two versions of one file can be compiled in one process without registering their ops twice.

    git show REV:kernels/group_norm.py > /tmp/old_group_norm.py
    python3 bench/gpu/triton_ptx.py /tmp/old_group_norm.py _gn_apply_kernel old.ptx SIG CONSTS
    python3 bench/gpu/triton_ptx.py kernels/group_norm.py _gn_apply_kernel new.ptx SIG CONSTS
    cmp old.ptx new.ptx

SIG: JSON of the runtime arguments' types, e.g. '{"X": "*fp16", "P": "i32", "eps": "fp32"}'; CONSTS: JSON of the
constexpr arguments, plus num_warps / num_stages, e.g. '{"C": 128, "SILU": true, "num_warps": 4}'. Needs Triton
(and its bundled ptxas), not a GPU. Session 20 used it for group_norm.py's `_scale_shift` (bench/NOTES.md).

`--div16 X,sxt,...` marks arguments as the JIT finds them at run time when they are multiples of 16 (pointers
16-byte aligned, strides and sizes divisible by 16), which is what lets Triton vectorise loads and pipeline them
through cp.async: without it a kernel's PTX can differ wholly from what runs (session 26: `attend_step` compiled to
scalar 2-byte loads and no cp.async). `--resources` also prints ptxas's registers and shared memory.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import tempfile
import textwrap

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

MARK = "\nif triton is not None:\n"


def triton_part(path: str):
    """The module made of the file's Triton block (dedented), written to a file of its own (Triton reads sources)."""
    src = open(path).read()
    if MARK not in src:
        raise SystemExit(f"triton_ptx: {path} has no `if triton is not None:` block")
    body = textwrap.dedent(src[src.index(MARK) + len(MARK):])
    name = "_triton_part_" + hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:10]
    tmp = os.path.join(tempfile.gettempdir(), name + ".py")
    with open(tmp, "w") as f:
        f.write("import triton\nimport triton.language as tl\n" + body)
    spec = importlib.util.spec_from_file_location(name, tmp)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def compile_sm90(path: str, kernel: str, signature: dict, consts: dict, div16: tuple[str, ...] = ()):
    """The kernel compiled for sm_90, with `div16` arguments specialised as multiples of 16."""
    consts = dict(consts)
    options = {k: consts.pop(k) for k in ("num_warps", "num_stages") if k in consts}
    sig = {**signature, **{k: "constexpr" for k in consts}}
    fn = getattr(triton_part(path), kernel)
    attrs = {(fn.arg_names.index(a),): [["tt.divisibility", 16]] for a in div16}
    return triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs),
                          target=GPUTarget("cuda", 90, 64), options=options)


def resources(compiled) -> str:
    """ptxas's resource line (registers, barriers) and the kernel's shared memory."""
    import subprocess
    from triton.backends.nvidia.compiler import get_ptxas
    exe = get_ptxas(90)
    exe = getattr(exe, "path", exe)
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(compiled.asm["ptx"])
        r = subprocess.run([exe, "-v", "--gpu-name=sm_90a", src, "-o", os.path.join(d, "k.cubin")],
                           capture_output=True, text=True)
    regs = [ln.split(":", 1)[1].strip() for ln in r.stderr.splitlines() if "registers" in ln]
    return f"{regs[0] if regs else r.stderr.strip()[:200]}; shared {compiled.metadata.shared} bytes"


def ptx(path: str, kernel: str, signature: dict, consts: dict, div16: tuple[str, ...] = (), compiled=None) -> str:
    compiled = compiled or compile_sm90(path, kernel, signature, consts, div16)
    text = re.sub(r"\.section\s+\.debug.*", "", compiled.asm["ptx"], flags=re.S)
    keep = [ln for ln in text.splitlines()
            if ln.strip() and ".loc" not in ln and ".file" not in ln and not re.fullmatch(r"\$L__tmp\d+:", ln.strip())
            and not ln.strip().startswith("//")]
    return "\n".join(keep) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("kernel")
    ap.add_argument("out")
    ap.add_argument("signature", type=json.loads)
    ap.add_argument("consts", type=json.loads)
    ap.add_argument("--div16", default="", help="comma-separated arguments specialised as multiples of 16")
    ap.add_argument("--resources", action="store_true", help="print ptxas's registers and the shared memory")
    args = ap.parse_args()
    compiled = compile_sm90(args.path, args.kernel, args.signature, args.consts,
                            tuple(a for a in args.div16.split(",") if a))
    text = ptx(args.path, args.kernel, args.signature, args.consts, compiled=compiled)
    with open(args.out, "w") as f:
        f.write(text)
    print(f"{args.kernel}: {len(text.splitlines())} lines of PTX -> {args.out}")
    if args.resources:
        print(f"{args.kernel}: {resources(compiled)}")


if __name__ == "__main__":
    main()
