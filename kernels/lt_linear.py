"""cuBLASLt GEMMs with a per-shape algorithm choice (`lt_linear`), tuned when a runtime builds a plan.

F.linear and torch._addmm_activation run the first algorithm of cuBLASLt's heuristic. At batch 1's late
steps that one is up to 19 % slower than the best of the others it offers (`bench/gpu/lt_probe.cu`, session
13: d24's qkv at 338 rows 13.7 -> 11.3 us, fc2 at 512 rows 22.3 -> 18.3 us; ~5 % of a generation's block
GEMMs). `lt_linear(x, w, b, gelu)` is x w^T + b, tanh-GELU'd if asked, through cuBLASLt's BIAS / GELU_BIAS
epilogues: the same computation, with the algorithm of its shape chosen by `tune`. `tune` times every
candidate of the heuristic (split-K reductions in float32 only) in a CUDA graph of launches over weight copies
larger than L2, as in a generation, and keeps the first unless another is at least `margin` faster.

Choices are made once per shape and process, so every runtime of a process computes a shape alike, and are
saved (`FLEXVAR_KERNELS_CACHE`/lt_algos.json, keyed by GPU, SM count and cuBLASLt version), so later
processes reuse them and a seed keeps its codes. The CUDA side (`torch/lt_linear.cpp`) is its own extension,
built on first use against the cuBLASLt that torch loaded (also where the other kernels come from the CMake library,
which does not contain it). On CPU the op is `lt_linear_ref`; on CUDA it has a kernel only once `load()` has built
the extension: `available()` says whether, and the fast runtime calls the op only then.
"""
from __future__ import annotations

import json
import logging
import math
import os
import statistics
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from . import HERE, _lib, cache_dir

log = logging.getLogger("flexvar.kernels")

BIAS, GELU_BIAS = 0, 1  # the epilogue argument of the ops
_lib.define("lt_linear(Tensor x, Tensor w, Tensor b, int epilogue) -> Tensor")
_lib.define("lt_select(Tensor x, Tensor w, Tensor b, int epilogue, int index) -> int")
_lib.define("lt_version(Tensor x) -> int")


def lt_linear_ref(x_MK: torch.Tensor, w_NK: torch.Tensor, b_N: torch.Tensor, gelu: bool = False) -> torch.Tensor:
    """The definition: x w^T + b, then gelu_tanh if `gelu`; (M, N) in x's dtype."""
    y = F.linear(x_MK, w_NK, b_N)
    return F.gelu(y, approximate="tanh") if gelu else y


@torch.library.impl(_lib, "lt_linear", "CPU")
def _lt_linear_cpu(x, w, b, epilogue):
    return lt_linear_ref(x, w, b, epilogue == GELU_BIAS)


@torch.library.register_fake("flexvar::lt_linear")
def _lt_linear_fake(x, w, b, epilogue):
    return x.new_empty(x.shape[0], w.shape[0])


@torch.library.impl(_lib, "lt_select", "CPU")
def _lt_select_cpu(x, w, b, epilogue, index):
    return 0  # no candidates: the reference runs


@torch.library.impl(_lib, "lt_version", "CPU")
def _lt_version_cpu(x):
    return 0


def lt_linear(x_MK: torch.Tensor, w_NK: torch.Tensor, b_N: torch.Tensor, gelu: bool = False) -> torch.Tensor:
    """The op: cuBLASLt with the shape's chosen algorithm on CUDA (fp16/bf16, aligned contiguous operands;
    ATen's addmm / _addmm_activation for others) where `available`, `lt_linear_ref` on CPU."""
    return torch.ops.flexvar.lt_linear(x_MK, w_NK, b_N, GELU_BIAS if gelu else BIAS)


# ---- building the CUDA side -------------------------------------------------------------------------
_state: dict = {"loaded": None, "chosen": {}, "saved": None}


def _cublaslt() -> tuple[Path, Path] | None:
    """(include folder, library file) of the cuBLASLt that torch loaded into this process, if found."""
    from torch.utils.cpp_extension import CUDA_HOME
    a = torch.ones(8, 8, device="cuda", dtype=torch.float16)
    torch.addmm(a[0], a, a)  # cuBLASLt is loaded by now
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    libs = sorted({line.split()[-1] for line in maps.splitlines() if "/libcublasLt.so" in line})
    if not libs:
        return None
    lib = Path(libs[0])
    for inc in (lib.parent.parent / "include", Path(CUDA_HOME or "/usr/local/cuda") / "include"):
        if (inc / "cublasLt.h").is_file():
            return inc, lib
    return None


def load() -> bool:
    """Build (once, cached) and load the CUDA side; False (logged once) where it cannot be."""
    if _state["loaded"] is not None:
        return _state["loaded"]
    ok = False
    if os.environ.get("FLEXVAR_NO_KERNELS") or not torch.cuda.is_available():
        pass
    elif (found := _cublaslt()) is None:
        log.warning("kernels: cuBLASLt's header or library not found; lt_linear runs ATen's GEMMs")
    else:
        from torch.utils.cpp_extension import load as build
        inc, lib = found
        out = cache_dir() / "lt"  # a folder of its own: each extension writes its own build.ninja
        out.mkdir(parents=True, exist_ok=True)
        try:
            build(name="flexvar_lt_ext", sources=[str(HERE / "torch" / "lt_linear.cpp")],
                  extra_include_paths=[str(inc)],
                  extra_ldflags=[f"-L{lib.parent}", f"-l:{lib.name}", f"-Wl,-rpath,{lib.parent}"],
                  build_directory=str(out), is_python_module=False, with_cuda=True, verbose=False)
            ok = True
        except Exception as e:  # noqa: BLE001 - fall back to ATen's GEMMs, loudly
            log.warning("kernels: cuBLASLt extension build failed, using ATen's GEMMs (%s)",
                        str(e).splitlines()[0][:200])
    _state["loaded"] = ok
    return ok


def available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether `lt_linear` runs cuBLASLt with chosen algorithms for this device and dtype."""
    return torch.device(device).type == "cuda" and dtype in (torch.float16, torch.bfloat16) and load()


# ---- choosing algorithms ----------------------------------------------------------------------------
def _machine(device: torch.device) -> str:
    p = torch.cuda.get_device_properties(device)
    x = torch.empty(0, device=device, dtype=torch.float16)
    return f"{p.name}|sm{p.major}{p.minor}|{p.multi_processor_count} SMs|cuBLASLt {torch.ops.flexvar.lt_version(x)}"


def _saved(machine: str) -> dict:
    """This machine's saved choices, {"M,N,K,dtype,gelu": index}; a file that does not parse is ignored."""
    if _state["saved"] is None:
        try:
            data = json.loads((cache_dir() / "lt_algos.json").read_text())
            _state["saved"] = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            _state["saved"] = {}
    return _state["saved"].setdefault(machine, {})


def _save() -> None:
    """Every machine's choices to lt_algos.json, replaced whole (a temporary file renamed over it)."""
    path = cache_dir() / "lt_algos.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".lt_algos.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_state["saved"], f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as e:
        log.warning("kernels: could not save the cuBLASLt choices (%s)", e)
        Path(tmp).unlink(missing_ok=True)


def graph_us(run, n: int, rounds: int = 5) -> float:
    """Median microseconds of one `run(i)` (i = 0 .. n-1) in a CUDA graph of n launches, over `rounds` replays."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run(0)  # outside the graph: kernels loaded, failures raised here
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(n):
            run(i)
    graph.replay()
    times = []
    for _ in range(rounds):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        graph.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / n)
    return statistics.median(times)


def choose(times: list[float], margin: float) -> int:
    """The candidate to keep: the fastest, if at least `margin` faster than the first (the heuristic's), else 0."""
    best = min(range(len(times)), key=times.__getitem__)
    return best if times[best] < (1 - margin) * times[0] else 0


def tune(shapes, dtype: torch.dtype, device, margin: float = 0.03, copy_bytes: int = 96 << 20) -> dict:
    """Choose the algorithm of every (M, N, K, gelu) in `shapes` that this process has not chosen yet: a saved
    choice for this machine if there is one, else the fastest candidate by `graph_us` (random operands, never
    zeros; the weight rotated over copies of up to `copy_bytes` in all, so it comes from device memory), kept only
    if at least `margin` faster than the heuristic's first. Returns {shape: (index, candidates, microseconds
    per candidate or None where saved)} for the shapes chosen by this call."""
    device = torch.device(device)
    if not available(device, dtype):
        return {}
    machine, chosen = _machine(device), _state["chosen"]
    saved, done, dirty = _saved(machine), {}, False
    for M, N, K, gelu in dict.fromkeys(shapes):
        key = (device.index or 0, M, N, K, str(dtype), bool(gelu))
        if key in chosen:
            continue
        name = f"{M},{N},{K},{str(dtype).removeprefix('torch.')},{int(bool(gelu))}"
        g = torch.Generator(device).manual_seed(M * 7919 + N * 31 + K)
        ws = [(torch.randn(N, K, device=device, generator=g) / K ** 0.5).to(dtype)]
        x = torch.randn(M, K, device=device, generator=g).to(dtype)
        b = torch.randn(N, device=device, generator=g).to(dtype)
        epi = GELU_BIAS if gelu else BIAS
        n = torch.ops.flexvar.lt_select(x, ws[0], b, epi, -1)
        times = None
        if n <= 1:
            index = 0
        elif isinstance(saved.get(name), int) and 0 <= saved[name] < n:
            index = saved[name]
        else:
            # launches per graph: one per weight copy, fewer for long GEMMs (~2 ms a graph at ~400 TFLOP/s and
            # 3 TB/s), whose time the activations dominate; the copies exist only while timing
            copies = max(2, min(24, math.ceil(copy_bytes / (N * K * dtype.itemsize))))
            est_s = 2 * M * N * K / 4e14 + N * K * dtype.itemsize / 3e12
            copies = max(2, min(copies, math.ceil(2e-3 / est_s)))
            ws += [(torch.randn(N, K, device=device, generator=g) / K ** 0.5).to(dtype) for _ in range(copies - 1)]
            times = []
            for i in range(n):
                torch.ops.flexvar.lt_select(x, ws[0], b, epi, i)
                try:
                    times.append(graph_us(lambda j: torch.ops.flexvar.lt_linear(x, ws[j], b, epi), copies))
                except RuntimeError as e:  # a candidate that fails to launch is never chosen
                    log.warning("kernels: cuBLASLt %s candidate %d failed (%s)", name, i, str(e).splitlines()[0][:120])
                    times.append(math.inf)
            index = choose(times, margin)
            saved[name], dirty = index, True
        torch.ops.flexvar.lt_select(x, ws[0], b, epi, index)
        chosen[key] = index
        done[(M, N, K, bool(gelu))] = (index, n, times)
        if times:
            log.info("kernels: cuBLASLt %s: candidate %d of %d, %.2f us (first %.2f us)", name, index, n,
                     times[index], times[0])
    if dirty:
        _save()
    return done
