"""Fused CUDA kernels and their plain-PyTorch references (installed as `flexvar.kernels`).

Each op is defined here with torch.library: its schema, a CPU implementation that *is* its
definition, and a fake (meta) implementation so torch.compile and export can trace it. The CUDA
implementations come from `torch/flexvar_ops.cpp` + `src/*.cu`, built on first use on a CUDA
machine (torch.utils.cpp_extension, cached) or by CMake (`FLEXVAR_KERNELS_LIB` names the library).
Where they are not built (CI, CPU) the `_ref` versions run and compute the same thing.

Ops:
  next_tokens:   codebook lookup through the word_embed-projected codebook + bicubic resize to the
                 next step + word_embed bias + positions, in one pass (include/flexvar/next_tokens.h).
  guided_sample: classifier-free guidance (or none, for logits guided beforehand) + an optional bias +
                 top-k + top-p + one seeded draw per token, in one pass over the vocabulary without
                 sorting it (include/flexvar/guided_sample.h).
  qk_norm_cache: a block's attention prologue: split qkv, L2-normalise q and k per head, scale q,
                 write k and v into the token-major KV cache (include/flexvar/qk_norm_cache.h).
  small_step:    every block of one step of few token rows in one cooperative kernel: LayerNorms,
                 modulation, GEMMs, q/k norms, cache write, attention, residuals
                 (include/flexvar/small_step.h).
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
_lib.define("guided_sample(Tensor logits, Tensor seed, float t, int rule, int top_k, float top_p, int step, "
            "Tensor? bias=None) -> Tensor")
_lib.define("qk_norm_cache(Tensor qkv, Tensor scale, Tensor(a!) k_cache, Tensor(b!) v_cache, int start) -> Tensor")
_lib.define("small_step(Tensor(a!) x, Tensor mods, Tensor(b!) kv, Tensor[] wqkv, Tensor[] bqkv, Tensor[] qscale, "
            "Tensor[] wproj, Tensor[] bproj, Tensor[] w1, Tensor[] b1, Tensor[] w2, Tensor[] b2, int start, "
            "float eps) -> ()")

# the rule argument of the op (flexvar_guidance_t); "none": the logits (B, l, V) are already guided
RULE_CODES = {"ramp": 0, "constant": 1, "none": 2}
MAX_SAMPLE_VOCAB = 16 * 1024  # the kernel holds a row in registers: up to 16 values per thread, 1024 threads
_M32 = 0xFFFFFFFF


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


# ---- guidance + top-k + top-p + draw --------------------------------------------------------------
def mix32(x):
    """A 32-bit integer hash, of int64 tensors or of Python ints (multipliers < 2^31, so products never overflow
    int64); the kernels' `mix32`."""
    x = x & _M32
    x = ((x ^ (x >> 16)) * 0x7FEB352D) & _M32
    x = ((x ^ (x >> 15)) * 0x5BD1E995) & _M32
    return x ^ (x >> 16)


def hashed_uniform(seed_1: torch.Tensor, step: int, n: int) -> torch.Tensor:
    """n uniforms in [0, 1) (float32, 24 bits) from (seed, step, index): u = hash(hash(seed) ^ f(step, i))."""
    i = torch.arange(n, device=seed_1.device, dtype=torch.int64)
    x = mix32(mix32(seed_1) ^ ((i + step * 0x9E3779B) & _M32))
    return (x >> 8).to(torch.float32) * (1.0 / (1 << 24))


def kept_mass_ref(g_BlV: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """exp(g - max g) where top-k and then top-p keep a token, 0 where they drop it: (B, l, V) float32.

    top-k keeps g >= the k-th largest (ties kept); top-p keeps a survivor while the mass of the
    survivors strictly more likely than it is < top_p * (their total): the release's sorted rule
    (ascending cumulative probability <= 1 - top_p is dropped), ties kept together.
    """
    V = g_BlV.shape[-1]
    e = torch.exp(g_BlV - g_BlV.amax(-1, keepdim=True))
    if 0 < top_k < V:
        kth = g_BlV.topk(top_k, dim=-1, largest=True, sorted=True)[0][..., -1:]
        e = torch.where(g_BlV >= kth, e, 0.0)
    if 0 < top_p < 1:
        z = e.sum(-1, keepdim=True)
        asc = e.sort(dim=-1)[0]
        upto = asc.cumsum(-1).gather(-1, torch.searchsorted(asc, e, right=True) - 1)  # mass of e_j <= e_v
        e = torch.where(z - upto < top_p * z, e, 0.0)
    return e


def guided_sample_ref(logits_2BlV: torch.Tensor, seed_1: torch.Tensor, t: float, rule: int, top_k: int,
                      top_p: float, step: int, bias_V: torch.Tensor | None = None) -> torch.Tensor:
    """Plain PyTorch: guidance, top-k, top-p, one inverse-CDF draw in vocabulary order: (2B, l, V) -> (B, l).

    g = (1 + t) cond - t uncond (ramp, rule 0) or uncond + t (cond - uncond) (constant, rule 1); rule 2
    (none): the logits are (B, l, V), already guided, and g = logits (t unused); a float32 bias (V,), if
    given, is added to every row of the logits first;
    top_k = 1 returns argmax g (first index on ties); else the code is the first v whose running sum
    of `kept_mass_ref` exceeds u * (its total), u = hashed_uniform(seed, step, row).
    """
    logits = logits_2BlV.float() if bias_V is None else logits_2BlV.float() + bias_V.float()
    if rule == RULE_CODES["none"]:
        g = logits
    else:
        cond, uncond = logits.chunk(2, dim=0)
        g = (1 + t) * cond - t * uncond if rule == 0 else uncond + t * (cond - uncond)
    B, l, V = g.shape
    if top_k == 1 or V == 1:
        return g.argmax(-1)
    cdf = kept_mass_ref(g, top_k, top_p).cumsum(-1)
    total = cdf[..., -1:]
    u = hashed_uniform(seed_1.reshape(1), step, B * l).view(B, l, 1)
    r = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, r, right=True).squeeze(-1)


@torch.library.impl(_lib, "guided_sample", "CPU")
def _guided_sample_cpu(logits, seed, t, rule, top_k, top_p, step, bias=None):
    return guided_sample_ref(logits, seed, t, rule, top_k, top_p, step, bias)


@torch.library.register_fake("flexvar::guided_sample")
def _guided_sample_fake(logits, seed, t, rule, top_k, top_p, step, bias=None):
    rows = logits.shape[0] if rule == RULE_CODES["none"] else logits.shape[0] // 2
    return logits.new_empty(rows, logits.shape[1], dtype=torch.int64)


def guided_sample(logits_2BlV: torch.Tensor, seed_1: torch.Tensor, t: float, rule: str, top_k: int, top_p: float,
                  step: int, use_kernel: bool = True, bias_V: torch.Tensor | None = None) -> torch.Tensor:
    """The fused kernel on CUDA when built (float32 logits, V <= MAX_SAMPLE_VOCAB), else `guided_sample_ref`.
    rule: "ramp" or "constant" on [conditional; unconditional] logits (2B, l, V), or "none" on logits
    (B, l, V) that are already guided (`FastRuntime.guided_logits`); bias_V: float32 (V,) added to every row
    first (the head's bias, so the head GEMM needs no pass of its own for it)."""
    r = RULE_CODES[rule]
    bias_V = None if bias_V is None else bias_V.float()  # the op takes a float32 bias
    if use_kernel and logits_2BlV.is_cuda and logits_2BlV.shape[-1] <= MAX_SAMPLE_VOCAB and load():
        return torch.ops.flexvar.guided_sample(logits_2BlV.float(), seed_1, float(t), r, int(top_k), float(top_p),
                                               int(step), bias_V)
    return guided_sample_ref(logits_2BlV, seed_1, t, r, top_k, top_p, step, bias_V)


# ---- attention prologue: q/k normalisation + KV-cache write -------------------------------------
def qk_norm_cache_ref(qkv_BlC3: torch.Tensor, scale_H: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                      start: int) -> torch.Tensor:
    """Plain PyTorch: q (B, l, H, d) = normalize(q) * scale[h]; k_cache[start + j, b] = normalize(k),
    v_cache[start + j, b] = v (caches (L, B, H, d)); norms in float32, rounded once to the dtype."""
    B, l = qkv_BlC3.shape[:2]
    H, d = k_cache.shape[2:]
    q, k, v = qkv_BlC3.reshape(B, l, 3, H, d).unbind(2)
    k_cache[start:start + l] = F.normalize(k.float(), dim=-1).to(k_cache.dtype).transpose(0, 1)
    v_cache[start:start + l] = v.transpose(0, 1)
    return (F.normalize(q.float(), dim=-1) * scale_H.float().reshape(H, 1)).to(qkv_BlC3.dtype)


@torch.library.impl(_lib, "qk_norm_cache", "CPU")
def _qk_norm_cache_cpu(qkv, scale, k_cache, v_cache, start):
    return qk_norm_cache_ref(qkv, scale, k_cache, v_cache, start)


@torch.library.register_fake("flexvar::qk_norm_cache")
def _qk_norm_cache_fake(qkv, scale, k_cache, v_cache, start):
    return qkv.new_empty(qkv.shape[0], qkv.shape[1], k_cache.shape[2], k_cache.shape[3])


def qk_norm_cache(qkv_BlC3: torch.Tensor, scale_H: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                  start: int, use_kernel: bool = True) -> torch.Tensor:
    """The fused kernel on CUDA when built (head dim a multiple of 32 up to 256, contiguous caches),
    else `qk_norm_cache_ref`. Returns q (B, l, H, d); writes the caches in place."""
    d = k_cache.shape[-1]
    if (use_kernel and qkv_BlC3.is_cuda and d % 32 == 0 and d <= 256 and k_cache.is_contiguous()
            and v_cache.is_contiguous() and load()):
        return torch.ops.flexvar.qk_norm_cache(qkv_BlC3, scale_H, k_cache, v_cache, int(start))
    return qk_norm_cache_ref(qkv_BlC3, scale_H, k_cache, v_cache, start)


# ---- every block of a step of few rows ----------------------------------------------------------------
SMALL_STEP_MAX_ROWS, SMALL_STEP_MAX_KEYS, SMALL_STEP_MAX_DEPTH = 64, 256, 32  # include/flexvar/small_step.h
_SMALL_STEP_MAX_TILES = 6  # column tiles of 8 per SM in the widest projection (src/small_step.cu)


def small_step_ref(x_RlC: torch.Tensor, mods: torch.Tensor, kv: torch.Tensor, wqkv, bqkv, qscale, wproj, bproj,
                   w1, b1, w2, b2, start: int, eps: float) -> None:
    """Plain PyTorch: every block on the step's rows x (R, l, C) float32, in place; writes the step's
    keys and values into kv (depth, 2, L, R, H, d) at [start, start + l). mods (depth, R, 6, C);
    per block i the weights wqkv[i] (3C, C), bqkv[i], qscale[i] (H) float32, wproj[i], bproj[i],
    w1[i], b1[i], w2[i], b2[i] in the cache's dtype. The definition is the fast runtime's per-block
    path (`fast_step.qkv_proj`, `qk_norm_cache_ref`, `fast_step.attend`, `fast_step.finish_step`), which computes
    `model.Block.forward_step`: products in the weights' dtype, LayerNorms, modulation and residuals
    in float32."""
    from ..fast_step import attend, finish_step, qkv_proj  # here, not at the top: fast_step imports this module
    end = start + x_RlC.shape[1]
    y = x_RlC
    for i in range(len(wqkv)):
        q = qk_norm_cache_ref(qkv_proj(y, mods[i], wqkv[i], bqkv[i], eps), qscale[i], kv[i, 0], kv[i, 1], start)
        y = finish_step(y, mods[i], attend(q, kv[i, 0], kv[i, 1], end), wproj[i], bproj[i], w1[i], b1[i], w2[i],
                        b2[i], eps)
    x_RlC.copy_(y)


@torch.library.impl(_lib, "small_step", "CPU")
def _small_step_cpu(x, mods, kv, wqkv, bqkv, qscale, wproj, bproj, w1, b1, w2, b2, start, eps):
    small_step_ref(x, mods, kv, wqkv, bqkv, qscale, wproj, bproj, w1, b1, w2, b2, start, eps)


@torch.library.register_fake("flexvar::small_step")
def _small_step_fake(x, mods, kv, wqkv, bqkv, qscale, wproj, bproj, w1, b1, w2, b2, start, eps):
    return None


def small_step_fits(R: int, l: int, C: int, H: int, hidden: int, depth: int, L: int, start: int,
                    dtype: torch.dtype, device) -> bool:
    """Whether the small_step kernel takes these shapes on `device` (the limits of small_step.h)."""
    dev = torch.device(device)
    if dev.type != "cuda" or dtype not in (torch.float16, torch.bfloat16) or C % H or C // H != 64:
        return False
    if not (0 < R * l <= SMALL_STEP_MAX_ROWS and 0 <= start and start + l <= min(L, SMALL_STEP_MAX_KEYS)):
        return False
    if not (0 < depth <= SMALL_STEP_MAX_DEPTH and C <= 2048 and C % 32 == 0 and hidden % 32 == 0):
        return False
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    return -(-max(3 * C, hidden) // 8 // sms) <= _SMALL_STEP_MAX_TILES


def small_step(x_RlC: torch.Tensor, mods: torch.Tensor, kv: torch.Tensor, weights: tuple, start: int, eps: float,
               use_kernel: bool = True) -> None:
    """The cooperative kernel on CUDA when built, the cache is contiguous (token-major) and the shapes fit
    (`small_step_fits`), else `small_step_ref`. weights: the nine per-block lists of `small_step_ref`.
    x is updated in place."""
    R, l, C = x_RlC.shape
    depth, L, H = kv.shape[0], kv.shape[2], kv.shape[4]
    hidden = weights[5][0].shape[0]  # w1 (hidden, C)
    if (use_kernel and x_RlC.is_cuda and kv.is_contiguous()
            and small_step_fits(R, l, C, H, hidden, depth, L, start, kv.dtype, x_RlC.device) and load()):
        torch.ops.flexvar.small_step(x_RlC, mods, kv, *weights, int(start), float(eps))
    else:
        small_step_ref(x_RlC, mods, kv, *weights, start, eps)


# ---- loading the compiled kernels ---------------------------------------------------------------
_state = {"loaded": None}


def cache_dir() -> Path:
    """Where built extensions and tuning choices are kept: FLEXVAR_KERNELS_CACHE, else ~/.cache/flexvar/kernels."""
    return Path(os.environ.get("FLEXVAR_KERNELS_CACHE", Path.home() / ".cache" / "flexvar" / "kernels"))


def _build_jit() -> str:
    from torch.utils.cpp_extension import load
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    log.warning("kernels: building the CUDA extension once (about a minute) into %s", cache)
    sources = [str(HERE / "torch" / "flexvar_ops.cpp")] + sorted(str(p) for p in (HERE / "src").glob("*.cu"))
    load(name="flexvar_kernels_ext", sources=sources,
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
