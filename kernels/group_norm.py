"""GroupNorm (+ SiLU) over channels-last activations, as two Triton kernels (`group_norm_silu`).

The tokenizer decoder's GroupNorms (32 groups, channels-last fp16/bf16 in the fast runtime) were
its slowest non-convolution kernels at batch 32: Inductor's reductions over the strided groups ran
at a third of the memory bandwidth. Here the activations are read as a (B * H * W, C) matrix:
  1. stats: one program per (image, chunk of rows) reads its rows once and reduces them to a mean
     and a sum of squared deviations per group: per channel from the chunk's first row as a shift,
     kept per (row slot, channel) in registers through the loop (whose loads are pipelined two
     iterations ahead through shared memory) and summed over the rows after it, then combined over
     the group's channels exactly; into a small float32 workspace;
  2. apply: one program per (image, chunk; coarser chunks than the statistics') combines the
     statistics' partials (equal counts, so the combination is exact), and writes
     (x - mean) * rstd * weight + bias, then SiLU if asked, in the input's dtype and layout.
Three passes over the tensor in all (read, read, write). Statistics and the normalisation are
float32; the result is rounded once (F.group_norm then F.silu in fp16 round twice).

`group_norm_silu_ref` is the definition (F.group_norm, then F.silu); the op `flexvar::group_norm_silu`
runs the kernels on CUDA for channels-last fp16/bf16 inputs when Triton is installed, the
reference otherwise. It is opaque to torch.compile (a registered op with a fake implementation).

`add_group_norm_silu(a, b, ...)` is x = a + b and group_norm_silu(x) in the same passes: the statistics
kernel reads a and b, writes x (rounded as PyTorch's a + b is) and reduces it, so a residual sum that a
GroupNorm normalises next (the decoder's ResNet and attention blocks) is not read back once more: five
passes instead of six. Its reference is `add_group_norm_silu_ref`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _lib, log

fallbacks = {"cuda": 0}  # CUDA calls that ran the reference (Triton present): logged on the first, counted

try:  # CPU builds of torch come without Triton
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

_lib.define("group_norm_silu(Tensor x, Tensor weight, Tensor bias, int groups, float eps, bool silu) -> Tensor")
_lib.define("add_group_norm_silu(Tensor a, Tensor b, Tensor weight, Tensor bias, int groups, float eps, bool silu)"
            " -> (Tensor, Tensor)")


def group_norm_silu_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float,
                        silu: bool) -> torch.Tensor:
    """Plain PyTorch: F.group_norm(x, groups, weight, bias, eps), then F.silu if `silu`."""
    y = F.group_norm(x, groups, weight, bias, eps)
    return F.silu(y) if silu else y


def add_group_norm_silu_ref(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int,
                            eps: float, silu: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain PyTorch: x = a + b, then (x, group_norm_silu_ref(x, ...))."""
    x = a + b
    return x, group_norm_silu_ref(x, weight, bias, groups, eps, silu)


def kernel_available(x: torch.Tensor, groups: int) -> bool:
    """Whether the op runs the Triton kernels for x (B, C, H, W)."""
    if triton is None or not x.is_cuda or x.dtype not in (torch.float16, torch.bfloat16) or x.dim() != 4:
        return False
    C = x.shape[1]
    return (x.is_contiguous(memory_format=torch.channels_last) and C % groups == 0 and C & (C - 1) == 0
            and 32 <= C <= 1024 and groups & (groups - 1) == 0 and x.shape[2] * x.shape[3] >= 1)


def chunks(P: int, B: int, target: int = 1024) -> int:
    """Chunks of rows per image: the largest divisor of P (pixels) with B * chunks <= target, at least 1,
    and at most 256 (the apply kernel combines all of an image's partials in one block)."""
    want = max(1, min(256, target // max(B, 1), P))
    for n in range(want, 0, -1):
        if P % n == 0:
            return n
    return 1


@torch.library.impl(_lib, "group_norm_silu", "CPU")
def _group_norm_silu_cpu(x, weight, bias, groups, eps, silu):
    return group_norm_silu_ref(x, weight, bias, groups, eps, silu)


def _fallback(x: torch.Tensor) -> None:
    fallbacks["cuda"] += triton is not None
    if fallbacks["cuda"] == 1:
        log.warning("group_norm_silu: %s %s input (strides %s) is not what the kernels take; reference used",
                    tuple(x.shape), x.dtype, x.stride())


def _launch(x, add, weight, bias, groups, eps, silu):
    """(x, y) with y = group_norm_silu(x); with `add` (same shape, dtype and layout) x = x + add is formed by
    the statistics kernel and returned instead."""
    B, C, H, W = x.shape
    P = H * W
    n = chunks(P, B)  # statistics: more, shorter programs (their loop waits on each load)
    na = chunks(P, B, target=512)  # apply: fewer, longer ones (each first combines the n partials)
    part = torch.empty(B, n, groups, 2, device=x.device, dtype=torch.float32)
    s = torch.empty_like(x, memory_format=torch.channels_last) if add is not None else x
    y = torch.empty_like(x, memory_format=torch.channels_last)
    _gn_stats_kernel[(B, n)](x, add if add is not None else x, s, part, P, P // n, C=C, G=groups,
                             BLOCK_P=max(1, min(32, 4096 // C)), ADD=add is not None, num_warps=4)
    _gn_apply_kernel[(B, na)](s, y, part, weight, bias, P, P // na, n, P // n, float(eps), C=C, G=groups,
                              BLOCK_P=max(1, min(64, 8192 // C)), NCH=triton.next_power_of_2(n), SILU=bool(silu),
                              num_warps=4)
    return s, y


@torch.library.impl(_lib, "group_norm_silu", "CUDA")
def _group_norm_silu_cuda(x, weight, bias, groups, eps, silu):
    if not kernel_available(x, groups):
        _fallback(x)
        return group_norm_silu_ref(x, weight, bias, groups, eps, silu)
    return _launch(x, None, weight, bias, groups, eps, silu)[1]


@torch.library.impl(_lib, "add_group_norm_silu", "CPU")
def _add_group_norm_silu_cpu(a, b, weight, bias, groups, eps, silu):
    return add_group_norm_silu_ref(a, b, weight, bias, groups, eps, silu)


@torch.library.impl(_lib, "add_group_norm_silu", "CUDA")
def _add_group_norm_silu_cuda(a, b, weight, bias, groups, eps, silu):
    if not (kernel_available(a, groups) and b.shape == a.shape and b.dtype == a.dtype
            and b.is_contiguous(memory_format=torch.channels_last)):
        _fallback(a)
        return add_group_norm_silu_ref(a, b, weight, bias, groups, eps, silu)
    return _launch(a, b, weight, bias, groups, eps, silu)


@torch.library.register_fake("flexvar::add_group_norm_silu")
def _add_group_norm_silu_fake(a, b, weight, bias, groups, eps, silu):
    return torch.empty_like(a), torch.empty_like(a)


@torch.library.register_fake("flexvar::group_norm_silu")
def _group_norm_silu_fake(x, weight, bias, groups, eps, silu):
    return torch.empty_like(x)


def group_norm_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float,
                    silu: bool) -> torch.Tensor:
    """The op: Triton kernels where `kernel_available`, else `group_norm_silu_ref`."""
    return torch.ops.flexvar.group_norm_silu(x, weight, bias, int(groups), float(eps), bool(silu))


def add_group_norm_silu(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int,
                        eps: float, silu: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The op: (a + b, group_norm_silu(a + b)) in the kernels' passes where `kernel_available` (a and b of one
    shape, dtype and channels-last layout), else `add_group_norm_silu_ref`."""
    return torch.ops.flexvar.add_group_norm_silu(a, b, weight, bias, int(groups), float(eps), bool(silu))


if triton is not None:
    @triton.jit
    def _gn_stats_kernel(X, A, S, PART, P, rows, C: tl.constexpr, G: tl.constexpr, BLOCK_P: tl.constexpr,
                         ADD: tl.constexpr):
        # ADD: the normalised tensor is S = X + A, rounded to X's dtype as PyTorch's addition rounds, written here
        b = tl.program_id(0)
        c = tl.program_id(1)
        n = tl.num_programs(1)
        rc = tl.arange(0, C)
        row0 = c * rows
        off = b.to(tl.int64) * P * C
        base = X + off
        shift = tl.load(base + row0 * C + rc).to(tl.float32)
        if ADD:
            shift = (shift + tl.load(A + off + row0 * C + rc).to(tl.float32)).to(X.dtype.element_ty).to(tl.float32)
        # (BLOCK_P, C) partial sums in registers: the loop is loads and adds only, no reduction across
        # warps (and no barrier) per iteration; the rows are summed once after it
        s1 = tl.zeros([BLOCK_P, C], tl.float32)
        s2 = tl.zeros([BLOCK_P, C], tl.float32)
        for r0 in tl.range(0, rows, BLOCK_P, num_stages=3):  # loads 2 iterations ahead (cp.async)
            rp = r0 + tl.arange(0, BLOCK_P)
            m = rp < rows
            idx = (row0 + rp)[:, None] * C + rc[None, :]
            x = tl.load(base + idx, mask=m[:, None], other=0.0).to(tl.float32)
            if ADD:
                x = (x + tl.load(A + off + idx, mask=m[:, None], other=0.0).to(tl.float32)).to(X.dtype.element_ty)
                tl.store(S + off + idx, x, mask=m[:, None])
                x = x.to(tl.float32)
            d = tl.where(m[:, None], x - shift[None, :], 0.0)
            s1 += d
            s2 += d * d
        t1 = tl.sum(s1, 0)
        t2 = tl.sum(s2, 0)
        mean_c = tl.reshape(shift + t1 / rows, [G, C // G])  # per channel over the chunk's rows
        m2_c = tl.reshape(t2 - t1 * t1 / rows, [G, C // G])
        mean_g = tl.sum(mean_c, 1) / (C // G)
        dev = mean_c - mean_g[:, None]
        m2_g = tl.sum(m2_c, 1) + rows * tl.sum(dev * dev, 1)
        rg = tl.arange(0, G)
        out = PART + ((b * n + c) * G + rg) * 2
        tl.store(out, mean_g)
        tl.store(out + 1, m2_g)

    @triton.jit
    def _gn_apply_kernel(X, Y, PART, Wt, Bs, P, rows, n, stat_rows, eps, C: tl.constexpr, G: tl.constexpr,
                         BLOCK_P: tl.constexpr, NCH: tl.constexpr, SILU: tl.constexpr):
        b = tl.program_id(0)
        c = tl.program_id(1)
        rk = tl.arange(0, NCH)
        rg = tl.arange(0, G)
        mk = rk < n
        part = PART + ((b * n + rk[:, None]) * G + rg[None, :]) * 2
        means = tl.load(part, mask=mk[:, None], other=0.0)
        m2s = tl.load(part + 1, mask=mk[:, None], other=0.0)
        mean = tl.sum(means, 0) / n
        dev = tl.where(mk[:, None], means - mean[None, :], 0.0)
        count = stat_rows * (C // G)  # values per group in one statistics chunk
        var = (tl.sum(m2s, 0) + count * tl.sum(dev * dev, 0)) / (count * n)
        rstd = 1.0 / tl.sqrt_rn(tl.maximum(var, 0.0) + eps)
        rc = tl.arange(0, C)
        mean_c = tl.reshape(tl.broadcast_to(mean[:, None], [G, C // G]), [C])
        rstd_c = tl.reshape(tl.broadcast_to(rstd[:, None], [G, C // G]), [C])
        scale = rstd_c * tl.load(Wt + rc).to(tl.float32)
        shift = tl.load(Bs + rc).to(tl.float32) - mean_c * scale
        row0 = c * rows
        off = b.to(tl.int64) * P * C
        for r0 in tl.range(0, rows, BLOCK_P, num_stages=3):
            rp = r0 + tl.arange(0, BLOCK_P)
            m = rp < rows
            idx = off + (row0 + rp)[:, None] * C + rc[None, :]
            x = tl.load(X + idx, mask=m[:, None], other=0.0).to(tl.float32)
            y = x * scale[None, :] + shift[None, :]
            if SILU:
                y = y / (1.0 + tl.exp(-y))
            tl.store(Y + idx, y.to(Y.dtype.element_ty), mask=m[:, None])
