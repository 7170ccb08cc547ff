"""A transformer block's four GEMMs with its LayerNorms, modulation and residuals fused in, as Triton
kernels that chain by programmatic dependent launch (`ln_linear`, `linear_residual`, `row_parts`).

Between `small_step` (steps of at most 32 token rows) and the large-batch path (cuBLAS GEMMs between
Inductor's fused LayerNorm kernels), batch 1's later steps (50 to 512 rows) ran about seven kernels
per block, most of them short, each paying its launch gap and its ramp and tail. Here a block is
five kernels:

  qkv  = ln_linear(x, parts, mod, scale1, shift1, Wqkv, bqkv)           LN1 + modulation in the A loads
  o    = attend_step(qkv, ...)                                            (kernels/attention.py)
  parts = linear_residual(o, Wproj, bproj, x, mod, gamma1)                x += (o Wproj^T + b) gamma1
  h    = ln_linear(x, parts, mod, scale2, shift2, W1, b1, gelu=True)      LN2 + modulation, GELU (tanh)
  parts = linear_residual(h, W2, b2, x, mod, gamma2)                      x += (h W2^T + b) gamma2

x is the float32 residual stream (M, C), M = rows (images x tokens), updated in place. A LayerNorm
needs whole rows, which no GEMM program holds: each `linear_residual` program leaves, per row, the
sum and the sum of squared deviations of its BLOCK_N columns ("parts", (n_parts, M, 2) float32),
and `ln_linear` combines a row's parts in a fixed order (Chan's formula: exact, deterministic) into
its mean and variance before its main loop. `row_parts` gives the parts of a step's input (one part
per row). The modulation rows are per image: row r belongs to image r // L (L tokens per image).

Programmatic dependent launch (sm_90+): every kernel here is launched with it, loads its first
weight tile, then waits for the previous kernel (`griddepcontrol.wait`) before it reads anything
that kernel wrote, and lets the next kernel launch at once. Weights never change, so the first tile
streams in while the previous kernel drains; at most two kernels overlap, so whatever is read after
the wait was written by a finished kernel.

Float32 statistics and modulation; the GEMM operands in the weights' dtype (fp16/bf16), accumulated in
float32; outputs of the qkv and fc1 GEMMs rounded once. `ln_linear_ref`, `linear_residual_ref` and
`row_parts_ref` are the definitions; Triton is optional (absent on CPU builds of torch) and the
references run where the kernels cannot.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

try:  # CPU builds of torch come without Triton
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

# modulation rows (B, 6, C): gamma1, gamma2, scale1, scale2, shift1, shift2
GAMMA1, GAMMA2, SCALE1, SCALE2, SHIFT1, SHIFT2 = range(6)


def row_parts_ref(x_MC: torch.Tensor, cols: int) -> torch.Tensor:
    """Per row and per group of `cols` columns: (sum, sum of squared deviations from the group's
    mean), float32 (C // cols, M, 2)."""
    M, C = x_MC.shape
    g = x_MC.float().view(M, C // cols, cols)
    s = g.sum(-1)
    q = ((g - (s / cols)[..., None]) ** 2).sum(-1)
    return torch.stack((s, q), -1).transpose(0, 1).contiguous()


def stats_from_parts(parts: torch.Tensor, C: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A row's mean and 1 / sqrt(var + eps) from its parts (Chan's formula, parts in order): (M,), (M,)."""
    n = C // parts.shape[0]
    mean = parts[..., 0].sum(0) / C
    m2 = (parts[..., 1] + n * (parts[..., 0] / n - mean) ** 2).sum(0)
    return mean, torch.rsqrt(m2 / C + eps)


def ln_linear_ref(x_MC: torch.Tensor, mod_B6C: torch.Tensor, scale_j: int, shift_j: int, w: torch.Tensor,
                  b: torch.Tensor, L: int, eps: float, gelu: bool = False) -> torch.Tensor:
    """(LN(x) (1 + scale) + shift) w^T + b, GELU (tanh) if asked, in w's dtype; LN without affine,
    float32; row r takes modulation row r // L. (M, N)."""
    M, C = x_MC.shape
    mod = mod_B6C.float().repeat_interleave(L, 0)[:M]
    h = F.layer_norm(x_MC.float(), (C,), eps=eps) * (1 + mod[:, scale_j]) + mod[:, shift_j]
    y = h.to(w.dtype).float() @ w.float().t() + b.float()
    return (F.gelu(y, approximate="tanh") if gelu else y).to(w.dtype)


def linear_residual_ref(a_MK: torch.Tensor, w: torch.Tensor, b: torch.Tensor, x_MC: torch.Tensor,
                        mod_B6C: torch.Tensor, gamma_j: int, L: int) -> torch.Tensor:
    """x + (a w^T + b) gamma in float32 (a new tensor); row r takes modulation row r // L."""
    g = mod_B6C.float().repeat_interleave(L, 0)[:x_MC.shape[0], gamma_j]
    return x_MC.float() + (a_MK.float() @ w.float().t() + b.float()) * g


def kernels_available(x_MC: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether the Triton kernels run for this residual stream and these weights."""
    return (triton is not None and x_MC.is_cuda and x_MC.dtype == torch.float32 and x_MC.is_contiguous()
            and w.dtype in (torch.float16, torch.bfloat16) and w.is_contiguous() and x_MC.shape[1] % 64 == 0)


def pdl_supported(device: torch.device) -> bool:
    """Programmatic dependent launch needs sm_90 or newer."""
    return torch.cuda.get_device_capability(device)[0] >= 9


def gemm_config(M: int, N: int, K: int) -> tuple[int, int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages): 64-row tiles, and the widest column tile
    (128, 64 or 32) that still gives at least 128 programs (about one per SM of an H100)."""
    tiles_m = triton.cdiv(M, 64) if triton is not None else (M + 63) // 64
    bn = 128
    while bn > 32 and tiles_m * (N // bn) < 128:
        bn //= 2
    return 64, bn, 64, 4, 4


def _launch(pdl: bool) -> dict:
    """Launch options: programmatic dependent launch when asked (the kwarg only then: Triton's
    interpreter takes no launch_pdl)."""
    return {"launch_pdl": True} if pdl else {}


def row_parts(x_MC: torch.Tensor, pdl: bool = False) -> torch.Tensor:
    """One part per row (its sum and sum of squared deviations), (1, M, 2) float32."""
    if triton is None or not x_MC.is_cuda or not x_MC.is_contiguous():
        return row_parts_ref(x_MC, x_MC.shape[1])
    M, C = x_MC.shape
    parts = torch.empty(1, M, 2, device=x_MC.device, dtype=torch.float32)
    bc = triton.next_power_of_2(C)
    rows = max(1, 4096 // bc)
    _row_parts_kernel[(triton.cdiv(M, rows),)](x_MC, parts, M, C, BLOCK_M=rows, BLOCK_C=bc, PDL=pdl,
                                               num_warps=4, **_launch(pdl))
    return parts


def ln_linear(x_MC: torch.Tensor, parts: torch.Tensor, mod_B6C: torch.Tensor, scale_j: int, shift_j: int,
              w: torch.Tensor, b: torch.Tensor, L: int, eps: float, gelu: bool = False, pdl: bool = False,
              config: tuple | None = None) -> torch.Tensor:
    """`ln_linear_ref` with the row statistics taken from `parts` (of x's current values): (M, N) in
    w's dtype. The Triton kernel where `kernels_available`, else the reference."""
    if not kernels_available(x_MC, w):
        return ln_linear_ref(x_MC, mod_B6C, scale_j, shift_j, w, b, L, eps, gelu)
    M, K = x_MC.shape
    N = w.shape[0]
    out = torch.empty(M, N, device=x_MC.device, dtype=w.dtype)
    bm, bn, bk, warps, stages = config or gemm_config(M, N, K)
    mod = mod_B6C.reshape(mod_B6C.shape[0], -1)
    grid = (N // bn, triton.cdiv(M, L) * triton.cdiv(L, bm))  # row tiles within an image: one modulation row
    _fused_linear_kernel[grid](x_MC, w, b, out, out, mod, parts, parts, M, N, K, L, parts.shape[0], float(eps),
                               x_MC.stride(0), w.stride(0), out.stride(0), 0, mod.stride(0),
                               scale_j * K, shift_j * K, 0, PRO=1, EPI=2 if gelu else 1, BLOCK_M=bm, BLOCK_N=bn,
                               BLOCK_K=bk, NP=triton.next_power_of_2(parts.shape[0]), PDL=pdl, num_warps=warps, num_stages=stages, **_launch(pdl))
    return out


def linear_residual(a_MK: torch.Tensor, w: torch.Tensor, b: torch.Tensor, x_MC: torch.Tensor,
                    mod_B6C: torch.Tensor, gamma_j: int, L: int, pdl: bool = False,
                    config: tuple | None = None) -> torch.Tensor:
    """x += (a w^T + b) gamma, in place (float32), and the parts of the new x: (C // BLOCK_N, M, 2).
    The Triton kernel where `kernels_available`, else the reference (parts of 64 columns)."""
    M, N = x_MC.shape
    if not kernels_available(x_MC, w) or a_MK.dtype != w.dtype or a_MK.stride(1) != 1:
        x_MC.copy_(linear_residual_ref(a_MK, w, b, x_MC, mod_B6C, gamma_j, L))
        return row_parts_ref(x_MC, 64)
    K = a_MK.shape[1]
    bm, bn, bk, warps, stages = config or gemm_config(M, N, K)
    parts = torch.empty(N // bn, M, 2, device=x_MC.device, dtype=torch.float32)
    mod = mod_B6C.reshape(mod_B6C.shape[0], -1)
    grid = (N // bn, triton.cdiv(M, bm))
    _fused_linear_kernel[grid](a_MK, w, b, x_MC, x_MC, mod, parts, parts, M, N, K, L, 1, 0.0,
                               a_MK.stride(0), w.stride(0), x_MC.stride(0), x_MC.stride(0), mod.stride(0),
                               0, 0, gamma_j * N, PRO=0, EPI=3, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, NP=1, PDL=pdl,
                               num_warps=warps, num_stages=stages, **_launch(pdl))
    return parts


if triton is not None:
    @triton.jit
    def _row_parts_kernel(X, P, M, C, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, PDL: tl.constexpr):
        if PDL:
            tl.extra.cuda.gdc_wait()
            tl.extra.cuda.gdc_launch_dependents()
        rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        rc = tl.arange(0, BLOCK_C)
        m = (rm[:, None] < M) & (rc[None, :] < C)
        x = tl.load(X + rm[:, None] * C + rc[None, :], mask=m, other=0.0)
        s = tl.sum(x, 1)
        d = tl.where(m, x - (s / C)[:, None], 0.0)
        tl.store(P + rm * 2, s, mask=rm < M)
        tl.store(P + rm * 2 + 1, tl.sum(d * d, 1), mask=rm < M)

    @triton.jit
    def _a_tile(A, Mod, rm, b, mmask, k0, sam, smb, scale_off, shift_off, mean, rstd,
                BLOCK_K: tl.constexpr, PRO: tl.constexpr, DT: tl.constexpr):
        """The (BLOCK_M, BLOCK_K) A operand at column k0: as stored, or LN(x) (1 + scale) + shift."""
        rk = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(A + rm[:, None] * sam + rk[None, :], mask=mmask[:, None], other=0.0)
        if PRO == 1:  # b: the program's image
            sc = tl.load(Mod + b * smb + scale_off + rk).to(tl.float32)
            sh = tl.load(Mod + b * smb + shift_off + rk).to(tl.float32)
            a = (a - mean[:, None]) * rstd[:, None] * (1.0 + sc[None, :]) + sh[None, :]
        return a.to(DT)

    @triton.jit
    def _fused_linear_kernel(A, W, Bias, Out, Res, Mod, Parts, PartsOut, M, N, K, L, n_parts, eps,
                             sam, swn, som, srm, smb, scale_off, shift_off, gamma_off,
                             PRO: tl.constexpr, EPI: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                             BLOCK_K: tl.constexpr, NP: tl.constexpr, PDL: tl.constexpr):
        # PRO 0: A as stored; 1: A = LN(x) (1 + scale) + shift, statistics from n_parts parts per row.
        # EPI 1: acc + bias; 2: GELU(acc + bias), both rounded to Out's dtype; 3: Out = Res + (acc + bias)
        # gamma in float32 (in place when Out is Res) and this program's parts of the new rows.
        pid_n = tl.program_id(0)
        pid_m = tl.program_id(1)
        DT = W.dtype.element_ty
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        if PRO == 1:  # programs tile each image's L rows: one modulation row (b) per program
            b = pid_m // tl.cdiv(L, BLOCK_M)
            r0 = (pid_m % tl.cdiv(L, BLOCK_M)) * BLOCK_M
            rm = b * L + r0 + tl.arange(0, BLOCK_M)
            mmask = (rm < M) & (r0 + tl.arange(0, BLOCK_M) < L)
        else:
            rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
            mmask = rm < M
            b = rm // L
        wp = W + rn[None, :] * swn + tl.arange(0, BLOCK_K)[:, None]  # (BLOCK_K, BLOCK_N) tiles of W^T
        w0 = tl.load(wp)  # weights never change: the first tile is read before waiting
        if PDL:
            tl.extra.cuda.gdc_wait()
            tl.extra.cuda.gdc_launch_dependents()
        mean = tl.zeros([BLOCK_M], tl.float32)
        rstd = tl.zeros([BLOCK_M], tl.float32)
        if PRO == 1:  # all of the rows' parts in one load: (NP, BLOCK_M)
            cnt = K // n_parts
            rp = tl.arange(0, NP)
            pm = (rp[:, None] < n_parts) & mmask[None, :]
            pp = Parts + (rp[:, None] * M + rm[None, :]) * 2
            s = tl.load(pp, mask=pm, other=0.0)
            q = tl.load(pp + 1, mask=pm, other=0.0)
            mean = tl.sum(s, 0) / K
            d = tl.where(pm, s / cnt - mean[None, :], 0.0)
            rstd = 1.0 / tl.sqrt_rn((tl.sum(q, 0) + cnt * tl.sum(d * d, 0)) / K + eps)
        a = _a_tile(A, Mod, rm, b, mmask, 0, sam, smb, scale_off, shift_off, mean, rstd, BLOCK_K, PRO, DT)
        acc = tl.dot(a, w0)
        for k0 in range(BLOCK_K, K, BLOCK_K):
            a = _a_tile(A, Mod, rm, b, mmask, k0, sam, smb, scale_off, shift_off, mean, rstd, BLOCK_K, PRO, DT)
            acc = tl.dot(a, tl.load(wp + k0), acc)
        acc += tl.load(Bias + rn).to(tl.float32)[None, :]
        omask = mmask[:, None]
        if EPI == 3:
            g = tl.load(Mod + b[:, None] * smb + gamma_off + rn[None, :], mask=omask, other=0.0).to(tl.float32)
            v = tl.load(Res + rm[:, None] * srm + rn[None, :], mask=omask, other=0.0) + acc * g
            tl.store(Out + rm[:, None] * som + rn[None, :], v, mask=omask)
            s = tl.sum(v, 1)
            d = tl.where(omask, v - (s / BLOCK_N)[:, None], 0.0)
            po = PartsOut + (pid_n * M + rm) * 2
            tl.store(po, s, mask=mmask)
            tl.store(po + 1, tl.sum(d * d, 1), mask=mmask)
        else:
            if EPI == 2:  # GELU, tanh approximation: tanh(u) = 1 - 2 / (exp(2u) + 1)
                u = 0.7978845608028654 * (acc + 0.044715 * acc * acc * acc)
                acc = 0.5 * acc * (2.0 - 2.0 / (tl.exp(2.0 * u) + 1.0))
            tl.store(Out + rm[:, None] * som + rn[None, :], acc.to(Out.dtype.element_ty), mask=omask)
