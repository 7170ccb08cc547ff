"""Fused CUDA kernels and their plain-PyTorch references (installed as `flexvar.kernels`).

Each op is defined here with torch.library: its schema, a CPU implementation that *is* its
definition, and a fake (meta) implementation so torch.compile and export can trace it. The CUDA
implementations come from `torch/flexvar_ops.cpp` + `src/*.cu`, built on first use on a CUDA
machine (torch.utils.cpp_extension, cached) or by CMake (`FLEXVAR_KERNELS_LIB` names the library).
Where they are not built (CI, CPU) the `_ref` versions run and compute the same thing.

Ops:
  next_tokens: codebook lookup through the word_embed-projected codebook + bicubic resize to the
               next step + word_embed bias + positions, in one pass (include/flexvar/next_tokens.h).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F

log = logging.getLogger("flexvar.kernels")
HERE = Path(__file__).resolve().parent

_lib = torch.library.Library("flexvar", "DEF")
_lib.define("next_tokens(Tensor prev, Tensor proj, Tensor bias, Tensor pos, Tensor ry, Tensor wy, "
            "Tensor rx, Tensor wx) -> Tensor")


@torch.library.impl(_lib, "next_tokens", "CPU")
def _next_tokens_cpu(prev, proj, bias, pos, ry, wy, rx, wx):
    """The op's definition: out[b, i*w+j] = bias + pos[i*w+j] + sum_ae wy[i,a] wx[j,e] proj[prev[b, ry[i,a], rx[j,e]]]."""
    h, w = ry.shape[0], rx.shape[0]
    codes = prev[:, ry.long()[:, :, None, None], rx.long()[None, None, :, :]]  # (B, h, 4, w, 4)
    weights = wy[:, :, None, None] * wx[None, None, :, :]  # (h, 4, w, 4)
    rows = torch.einsum("bhawec,hawe->bhwac", proj[codes].float(), weights)
    out = rows.sum(3).reshape(prev.shape[0], h * w, -1) + bias.float() + pos.float()
    return out.to(proj.dtype)


@torch.library.register_fake("flexvar::next_tokens")
def _next_tokens_fake(prev, proj, bias, pos, ry, wy, rx, wx):
    return proj.new_empty(prev.shape[0], ry.shape[0] * rx.shape[0], proj.shape[1])


def next_tokens_ref(prev_Bhw: torch.Tensor, proj_VC: torch.Tensor, bias_C: torch.Tensor, pos_LC: torch.Tensor,
                    hw: tuple[int, int]) -> torch.Tensor:
    """Plain PyTorch: projected rows of the codes, bicubic-resized to hw, + bias + positions: (B, h*w, C)."""
    emb = proj_VC[prev_Bhw].permute(0, 3, 1, 2)
    up = F.interpolate(emb, size=hw, mode="bicubic", align_corners=False)
    return up.flatten(2).transpose(1, 2) + bias_C + pos_LC


# ---- loading the compiled kernels ---------------------------------------------------------------
_state = {"loaded": None}


def _build_jit() -> str:
    from torch.utils.cpp_extension import load
    cache = Path(os.environ.get("FLEXVAR_KERNELS_CACHE", Path.home() / ".cache" / "flexvar" / "kernels"))
    cache.mkdir(parents=True, exist_ok=True)
    log.warning("kernels: building the CUDA extension once (about a minute) into %s", cache)
    load(name="flexvar_kernels_ext", sources=[str(HERE / "torch" / "flexvar_ops.cpp"), str(HERE / "src" / "next_tokens.cu")],
         extra_include_paths=[str(HERE / "include")], build_directory=str(cache), is_python_module=False,
         extra_cuda_cflags=["-O3", "-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90"],
         verbose=False)
    return str(cache / "flexvar_kernels_ext.so")


def load(build: bool = True) -> bool:
    """Make the CUDA implementations available; False (once logged) where they cannot be."""
    if _state["loaded"] is not None:
        return _state["loaded"]
    ok = False
    if os.environ.get("FLEXVAR_NO_KERNELS"):
        log.info("kernels: disabled by FLEXVAR_NO_KERNELS")
    elif not torch.cuda.is_available():
        pass
    elif os.environ.get("FLEXVAR_KERNELS_LIB"):
        torch.ops.load_library(os.environ["FLEXVAR_KERNELS_LIB"])
        ok = True
    elif build:
        try:
            _build_jit()
            ok = True
        except Exception as e:  # noqa: BLE001 - fall back to the references, loudly
            log.warning("kernels: CUDA build failed, using the PyTorch references (%s)", str(e).splitlines()[0][:200])
    _state["loaded"] = ok
    return ok


def next_tokens(prev_Bhw, proj_VC, bias_C, pos_LC, hw, taps, use_kernel: bool = True) -> torch.Tensor:
    """The fused kernel on CUDA when built (taps = (ry, wy, rx, wx)), else `next_tokens_ref`."""
    if use_kernel and prev_Bhw.is_cuda and load():
        return torch.ops.flexvar.next_tokens(prev_Bhw, proj_VC, bias_C, pos_LC, *taps)
    return next_tokens_ref(prev_Bhw, proj_VC, bias_C, pos_LC, hw)
