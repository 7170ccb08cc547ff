"""AOTInductor packages behind the Engine interface: the step package is chosen by the step's bucket."""
from __future__ import annotations

import ctypes
import os
import sys

import torch

from flexvar.errors import first_line
from flexvar.export.artifacts import ArtifactError

from .base import Engine


def libstdcxx_global() -> bool:
    """Put the process's shared libstdc++ into the global symbol scope; True if it is there.

    CUDA packages compiled by torch 2.11 on the device image carry a static copy of libstdc++ (their
    wrapper library needs no libstdc++.so and defines ~4,400 std:: symbols). In a Python process the
    shared libstdc++ is only in torch's local scope, so the package's std::regex/std::locale code binds
    partly to its own copy and partly to the shared one, and crashes (SIGSEGV in parse_device_str
    while the model is constructed: bench/NOTES.md). A C++ program has the shared libstdc++ in the
    global scope, where every reference binds to it, and loads the same packages; this gives a
    Python process the same scope. Only an already loaded libstdc++ is promoted (RTLD_NOLOAD)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        ctypes.CDLL("libstdc++.so.6", mode=os.RTLD_GLOBAL | os.RTLD_NOLOAD)
    except OSError:
        return False
    return True


class AOTIEngine(Engine):
    backend = "aoti"

    def __init__(self, device: torch.device, input_names: list[str], output_names: list[str]):
        self.device = torch.device(device)
        self.input_names, self.output_names = input_names, output_names
        self.runners: list[tuple[int, int, object]] = []

    def load(self, path: str, min_tokens: int = 0, max_tokens: int = 1 << 30) -> "AOTIEngine":
        """Add a package serving token counts [min_tokens, max_tokens] (call once per bucket)."""
        if self.device.type == "cuda":
            libstdcxx_global()
        try:
            runner = torch._inductor.aoti_load_package(path)
        except Exception as e:  # noqa: BLE001 - a corrupt or foreign package, named in one line
            raise ArtifactError(f"{path}: AOTInductor cannot load it ({type(e).__name__}: {first_line(e)}); --rebuild "
                                f"compiles the packages again") from e
        self.runners.append((min_tokens, max_tokens, runner))
        return self

    def _runner(self, feeds):
        n = feeds["x"].shape[1] if "x" in feeds else 0
        for lo, hi, r in self.runners:
            if lo <= n <= hi:
                return r
        raise ValueError(f"no AOTInductor package covers a step of {n} tokens")

    def run(self, feeds, outputs=None, stream=None):
        res = self._runner(feeds)(*[feeds[n].contiguous() for n in self.input_names])
        res = res if isinstance(res, (list, tuple)) else [res]
        out = {}
        for n, t in zip(self.output_names, res):
            if outputs and n in outputs:
                outputs[n].copy_(t)
                t = outputs[n]
            out[n] = t
        return out
