"""The fast runtime's per-step functions: one block's halves over its weights as plain tensors, the head's input,
guidance coefficients, bicubic taps. Pure functions of their inputs (no runtime state): `FastRuntime` compiles them,
the export traces them (`flexvar.export.graphs`), and `small_step_ref` is defined by them.

In fp16/bf16 on CUDA the runtime passes `lt=True`: the GEMMs that are not split-K then run as
`flexvar.kernels.lt_linear` (cuBLASLt, each shape's algorithm tuned when a plan is built); with `splits`, the
projection and fc2 as summed `skinny_partials`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from .kernels import attention as _attention
from .kernels import lt_linear as _lt
from .kernels import skinny_mm as _skinny_mm
from .sampling import SamplingParams, guidance_weight, guide
from .schedule import Schedule

# in this order of preference (bench/attn_backends.py on the H100, fp16, d16 shapes, the cache views:
# cuDNN 64 / 418 us per layer over steps 2-10 at batch 1 / 32, flash 80 / 548; cuDNN has no kernel
# for the first step's single token, flash takes it; float32 runs the memory-efficient kernel)
_SDPA_BACKENDS = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                  SDPBackend.MATH]


def bicubic_taps(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Source indices (n_out, 4) and weights (n_out, 4) of PyTorch's bicubic resize
    (align_corners=False, A = -0.75, borders clamped), in float32 arithmetic like PyTorch's."""
    A = -0.75
    scale = torch.tensor(n_in / n_out, dtype=torch.float32)
    real = scale * (torch.arange(n_out, dtype=torch.float32) + 0.5) - 0.5
    base = torch.floor(real)
    t = real - base

    def near(x):  # |x| <= 1
        return ((A + 2) * x - (A + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A

    w = torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], dim=-1)
    idx = (base.long()[:, None] + torch.arange(-1, 3)).clamp(0, n_in - 1)
    return idx, w


def qkv_proj(x_BlC: torch.Tensor, mod_B6C: torch.Tensor, wqkv: torch.Tensor, bqkv: torch.Tensor,
             eps: float, lt: bool = False) -> torch.Tensor:
    """A block's qkv projection of LN(x)(1 + scale1) + shift1: (B, l, 3C) in the weights' dtype.
    lt: the GEMM as `lt_linear` (cuBLASLt, the algorithm tuned for its shape) instead of F.linear."""
    B, l, C = x_BlC.shape[0], x_BlC.shape[1], wqkv.shape[1]
    _, _, s1, _, sh1, _ = mod_B6C.float().unsqueeze(2).unbind(1)  # each (B, 1, C)
    h = (F.layer_norm(x_BlC, (C,), eps=eps) * (1 + s1) + sh1).to(wqkv.dtype)
    if lt:
        return _lt.lt_linear(h.reshape(B * l, C), wqkv, bqkv).view(B, l, -1)
    return F.linear(h, wqkv, bqkv)


def qkv_step(x_BlC: torch.Tensor, mod_B6C: torch.Tensor, wqkv: torch.Tensor, bqkv: torch.Tensor,
             scale_H1: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """First half of a block: q (B, H, l, d) normalised and scaled, k (normalised) and v as (l, B, H, d)."""
    B, l = x_BlC.shape[:2]
    C, H = wqkv.shape[1], scale_H1.shape[0]  # from the weights: constants when exported
    dt = wqkv.dtype
    q, k, v = qkv_proj(x_BlC, mod_B6C, wqkv, bqkv, eps).view(B, l, 3, H, C // H).unbind(2)
    q = (F.normalize(q.float(), dim=-1) * scale_H1).to(dt).transpose(1, 2)
    k = F.normalize(k.float(), dim=-1).to(dt)
    return q, k.transpose(0, 1), v.transpose(0, 1)


def finish_step(x_BlC: torch.Tensor, mod_B6C: torch.Tensor, o_BHld: torch.Tensor, wproj: torch.Tensor,
                bproj: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
                eps: float, splits: tuple[int, int] = (0, 0), lt: bool = False) -> torch.Tensor:
    """Second half: x += proj(o) * gamma1; x += ffn(LN(x)(1+scale2)+shift2) * gamma2 (x in float32).
    splits: K splits of the projection and fc2 as `skinny_partials` (0: one GEMM, cuBLAS on CUDA);
    lt: the GEMMs that are not split as `lt_linear` (cuBLASLt, the algorithm tuned for their shape)."""
    B, l = x_BlC.shape[:2]
    C = wproj.shape[0]
    g1, g2, _, s2, _, sh2 = mod_B6C.float().unsqueeze(2).unbind(1)
    o = o_BHld.transpose(1, 2).reshape(B * l, C)
    x = x_BlC + _linear(o, wproj, bproj, splits[0], lt).view(B, l, C).float() * g1
    h = F.layer_norm(x, (C,), eps=eps) * (1 + s2) + sh2
    f = _linear(fc1_gelu(h.to(w1.dtype).reshape(B * l, C), w1, b1, lt), w2, b2, splits[1], lt).view(B, l, C)
    return x + f.float() * g2


def _linear(x_NK: torch.Tensor, w: torch.Tensor, b: torch.Tensor, splits: int, lt: bool = False) -> torch.Tensor:
    """x w^T + b in w's dtype: one GEMM (`lt_linear` if lt, else F.linear), or with splits > 0 the sum of
    `skinny_partials` (float32, rounded once), which the compiler fuses into the kernel that reads the
    result. The sum is written out as S - 1 additions in split order: as `.sum(0)`, a reduction over
    another axis than the LayerNorm's that follows, Inductor gave it a kernel of its own at d16 (31 more
    per step, ~0.1 ms)."""
    if splits:
        parts = _skinny_mm.skinny_partials(x_NK, w, splits).unbind(0)
        total = parts[0]
        for p in parts[1:]:
            total = total + p
        return (total + b.float()).to(w.dtype)
    if lt:
        return _lt.lt_linear(x_NK, w, b)
    return F.linear(x_NK, w, b)


def finish_qkv(x_BlC: torch.Tensor, mod_B6C: torch.Tensor, o_BHld: torch.Tensor, wproj: torch.Tensor,
               bproj: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
               mod_next: torch.Tensor, wqkv_next: torch.Tensor, bqkv_next: torch.Tensor,
               eps: float, splits: tuple[int, int] = (0, 0), lt: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """A block's second half and the next block's qkv projection, in one graph so the compiler
    fuses the residual update with the next LayerNorm: (x, qkv of the next block)."""
    x = finish_step(x_BlC, mod_B6C, o_BHld, wproj, bproj, w1, b1, w2, b2, eps, splits, lt)
    return x, qkv_proj(x, mod_next, wqkv_next, bqkv_next, eps, lt)


def attend(q_BlHd: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, end: int,
           kernel: bool = False) -> torch.Tensor:
    """Attention of a step's queries (B, l, H, d) over the first `end` cached tokens (caches (L, B, H, d)),
    scale 1 (q is prescaled): (B, H, l, d). Every operand is a strided view, read in place.
    kernel: the Triton kernel (`flexvar.kernels.attention`) where it runs, else SDPA."""
    if kernel and _attention.kernel_available(q_BlHd):
        return _attention.attend(q_BlHd, k_cache, v_cache, end).transpose(1, 2)
    with sdpa_kernel(_SDPA_BACKENDS, set_priority=True):
        return F.scaled_dot_product_attention(q_BlHd.transpose(1, 2), k_cache[:end].permute(1, 2, 0, 3),
                                              v_cache[:end].permute(1, 2, 0, 3), scale=1.0)


def fc1_gelu(h_NC: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, lt: bool = False) -> torch.Tensor:
    """gelu_tanh(h w1^T + b1); on CUDA the GELU runs in the GEMM's epilogue (cuBLASLt; with lt, the algorithm
    tuned for the shape: `lt_linear`)."""
    if lt:
        return _lt.lt_linear(h_NC, w1, b1, gelu=True)
    if h_NC.is_cuda and not torch.onnx.is_in_onnx_export():  # ONNX has no such fused op
        return torch._addmm_activation(b1, h_NC, w1.t(), use_gelu=True)
    return F.gelu(F.linear(h_NC, w1, b1), approximate="tanh")


def head_input(x_BlC: torch.Tensor, head_B2C: torch.Tensor, w_head: torch.Tensor, eps: float) -> torch.Tensor:
    """The head's input LN(x) (1 + scale) + shift in float32, rounded to the head weight's dtype (one fused
    kernel when compiled). The width comes from the weight: a constant when exported."""
    return _head_input_f32(x_BlC, head_B2C, w_head.shape[1], eps).to(w_head.dtype)


def _head_input_f32(x_BlC: torch.Tensor, head_B2C: torch.Tensor, C: int, eps: float) -> torch.Tensor:
    x = F.layer_norm(x_BlC.float(), (C,), eps=eps)
    return x * (1 + head_B2C[:, 0:1].float()) + head_B2C[:, 1:2].float()


def guided_head_input(x_2BlC: torch.Tensor, head_2B2C: torch.Tensor, coef_2: torch.Tensor, w_head: torch.Tensor,
                      eps: float) -> torch.Tensor:
    """The head's input with guidance applied, (B, l, C): a h_cond - b h_uncond of the two halves' `head_input`
    in float32, rounded once to the head weight's dtype. The head is linear and a - b = 1 for both rules
    (ramp: a = 1 + t, b = t; constant: a = t, b = t - 1), so the head of this is the guided logits, bias
    included: half the head's rows and logits, and one rounding instead of two."""
    cond, uncond = _head_input_f32(x_2BlC, head_2B2C, w_head.shape[1], eps).chunk(2, dim=0)
    return (coef_2[0] * cond - coef_2[1] * uncond).to(w_head.dtype)


def guidance_coefficients(schedule: Schedule, params: SamplingParams) -> torch.Tensor:
    """(steps, 2) float32: each step's (a, b) of `guided_head_input`, read off `sampling.guide` (the rules'
    one definition) at its guidance weight t (`guidance_weight`): guiding a conditional row (1, 0) and an
    unconditional row (0, 1) gives (a, -b)."""
    unit = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]], dtype=torch.float64)  # (2, 1, 2): cond, uncond
    rows = [guide(unit, guidance_weight(si, len(schedule), hw, params), params.guidance)[0, 0] * torch.tensor([1, -1])
            for si, hw in enumerate(schedule)]
    return torch.stack(rows).float() + 0.0  # (+ 0.0: b = -0.0 at t = 0 becomes 0.0)


def _has_mm_out_dtype(device) -> bool:
    """Whether torch.mm takes out_dtype (bf16/fp16 inputs, float32 output) here."""
    try:
        a = torch.ones(2, 2, device=device, dtype=torch.bfloat16)
        return torch.mm(a, a, out_dtype=torch.float32).dtype == torch.float32
    except (TypeError, RuntimeError):
        return False
