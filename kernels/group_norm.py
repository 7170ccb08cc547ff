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
     (x - mean) * rstd * weight + bias, then SiLU if asked, in the input's dtype, channels-last (on CUDA the ops'
     reference path returns that layout too, as their fake implementations state).
Three passes over the tensor in all (read, read, write). Statistics and the normalisation are
float32; the result is rounded once (F.group_norm then F.silu in fp16 round twice).

Two inputs the decoder would otherwise form in passes of their own:
  - `in_bias`: the per-channel bias of the convolution that produced x. On CUDA, Inductor runs a
    convolution without its bias and adds the bias in the kernel that consumes the result; an opaque op
    cannot take it in, so that addition cost a read and a write of the tensor before every GroupNorm op.
    Both kernels add it as they load (x + in_bias rounded to x's dtype, as the convolution's output is).
  - `add_group_norm_silu(a, b, ..., b_bias)`: the residual sum s = a + (b + b_bias) of a ResNet or
    attention block, which the next GroupNorm normalises: the statistics kernel reads a and b, writes s
    (rounded as PyTorch rounds each addition) and reduces it; the apply kernel reads s.

And one consumer folded in: `group_norm_silu_taps` ends with the decoder's output convolution (3x3, C -> 3)
in mind. Its apply pass does not write the normalised tensor; it multiplies each normalised pixel (rounded to x's
dtype, as the GroupNorm's output is) by the convolution's 27 (tap, output channel) filter columns (`conv_taps`,
padded to 32) and writes those float32 partial products, (B, H, W, 32): 128 bytes a pixel instead of 2 C, and
no convolution that reads 2 C bytes a pixel to make 6. `conv_from_taps` then sums each output pixel's nine
neighbours' partials (plain tensor ops, which Inductor fuses into one pass): the convolution in float32.

`group_norm_silu_ref`, `add_group_norm_silu_ref` and `group_norm_silu_taps_ref` are the definitions (plain
PyTorch); the ops `flexvar::group_norm_silu`, `flexvar::add_group_norm_silu` and `flexvar::group_norm_silu_taps`
run the kernels on CUDA for channels-last fp16/bf16 inputs when Triton is installed, the references otherwise.
They are opaque to torch.compile (registered ops with fake implementations).
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

_lib.define("group_norm_silu(Tensor x, Tensor weight, Tensor bias, int groups, float eps, bool silu, "
            "Tensor? in_bias=None) -> Tensor")
_lib.define("add_group_norm_silu(Tensor a, Tensor b, Tensor weight, Tensor bias, int groups, float eps, bool silu, "
            "Tensor? b_bias=None) -> (Tensor, Tensor)")
_lib.define("group_norm_silu_taps(Tensor x, Tensor weight, Tensor bias, int groups, float eps, Tensor taps, "
            "Tensor? in_bias=None, Tensor? res=None) -> Tensor")

TAPS = 32  # columns of `conv_taps`: 9 taps x 3 output channels, padded

# The order in which the kernels' programs take (image, chunk of rows). False: chunk by chunk across the images
# (the first programs take chunk 0 of every image). True: image by image, the statistics pass from the tensor's
# end backwards and the apply pass from its start, so that each pass starts on what the pass before it touched last
# and may still find in L2 (50 MB on the H100, against 537 MB for 32 images at 256x256x128): the statistics on the
# end of the convolution's output (cuDNN writes the images in order), the apply pass on the start of what the
# statistics read last. The same arithmetic either way, the same bits (`test_group_norm_program_orders_agree`). On
# since session 23: the decode of 32 images with CUDA graphs, the orders alternated in one process on an H100
# (`bench/gpu/decode_chunk_probe.py --variants 32:op1,32:op0,32:op1,32:op0`), 19.68 / 19.65 ms against 19.83 / 19.92.
L2_ORDER = True


def add_channel_bias(x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (B, C, H, W) + bias (C,) per channel, in x's dtype; x itself where bias is None."""
    return x if bias is None else x + bias.to(x.dtype).view(1, -1, 1, 1)


def group_norm_silu_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float,
                        silu: bool, in_bias: torch.Tensor | None = None) -> torch.Tensor:
    """Plain PyTorch: F.group_norm(x + in_bias, groups, weight, bias, eps), then F.silu if `silu`; in_bias (C,)
    per channel, optional."""
    y = F.group_norm(add_channel_bias(x, in_bias), groups, weight, bias, eps)
    return F.silu(y) if silu else y


def add_group_norm_silu_ref(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int,
                            eps: float, silu: bool,
                            b_bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain PyTorch: s = a + (b + b_bias), then (s, group_norm_silu_ref(s, ...)); b_bias (C,) optional."""
    s = a + add_channel_bias(b, b_bias)
    return s, group_norm_silu_ref(s, weight, bias, groups, eps, silu)


def conv_taps(w_O_C33: torch.Tensor) -> torch.Tensor:
    """A 3x3 convolution's filters (O, C, 3, 3), O <= 3, as the (C, TAPS) matrix of `group_norm_silu_taps`: column
    (3 dy + dx) O + o holds filter o's tap (dy, dx); the columns past 9 O are zero. In the filters' dtype."""
    n_out, C = w_O_C33.shape[:2]
    if w_O_C33.shape[2:] != (3, 3) or 9 * n_out > TAPS:
        raise ValueError(f"conv_taps takes 3x3 filters of at most {TAPS // 9} output channels, "
                         f"not {tuple(w_O_C33.shape)}")
    return F.pad(w_O_C33.permute(1, 2, 3, 0).reshape(C, 9 * n_out), (0, TAPS - 9 * n_out)).contiguous()


def conv_from_taps(t_BHWK: torch.Tensor, bias: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The 3x3 convolution (padding 1) whose filters `conv_taps` laid out, from `group_norm_silu_taps`' partial
    products (B, H, W, TAPS): each output pixel sums its nine neighbours' (tap, o) partials (zero past the border)
    and the bias in float32, rounded once to `dtype`: (B, O, H, W), channels-last strides. O from the bias."""
    n_out = bias.shape[0]
    B, H, W, _ = t_BHWK.shape
    tp = F.pad(t_BHWK, (0, 0, 1, 1, 1, 1))  # (B, H + 2, W + 2, TAPS): input pixel (i, j) at (i + 1, j + 1)
    acc = bias.float()
    for dy in range(3):  # output (i, j) takes tap (dy, dx) of input (i + dy - 1, j + dx - 1)
        for dx in range(3):
            k = (3 * dy + dx) * n_out
            acc = acc + tp[:, dy:dy + H, dx:dx + W, k:k + n_out]
    return acc.to(dtype).permute(0, 3, 1, 2)


def group_norm_silu_taps_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float,
                             taps: torch.Tensor, in_bias: torch.Tensor | None = None,
                             res: torch.Tensor | None = None) -> torch.Tensor:
    """Plain PyTorch: y = group_norm_silu_ref(v, ..., silu=True) of v = x + in_bias (+ res: v = res + (x + in_bias),
    as `add_group_norm_silu_ref` forms it), in x's dtype; then each pixel's y times `taps` (C, TAPS) in float32:
    (B, H, W, TAPS) float32."""
    if res is None:
        y = group_norm_silu_ref(x, weight, bias, groups, eps, True, in_bias)
    else:
        y = add_group_norm_silu_ref(res, x, weight, bias, groups, eps, True, in_bias)[1]
    return y.permute(0, 2, 3, 1).float() @ taps.float()


def kernel_available(x: torch.Tensor, groups: int) -> bool:
    """Whether the op runs the Triton kernels for x (B, C, H, W)."""
    if triton is None or not x.is_cuda or x.dtype not in (torch.float16, torch.bfloat16) or x.dim() != 4:
        return False
    C = x.shape[1]
    return (x.is_contiguous(memory_format=torch.channels_last) and C % groups == 0 and C & (C - 1) == 0
            and 32 <= C <= 1024 and groups & (groups - 1) == 0 and x.shape[2] * x.shape[3] >= 1)


def _like(x: torch.Tensor, other: torch.Tensor | None, vec: torch.Tensor | None) -> bool:
    """other (if any) of x's shape, dtype and channels-last layout; vec (if any) a contiguous (C,) of x's dtype
    on x's device."""
    return ((other is None or (other.shape == x.shape and other.dtype == x.dtype
                               and other.is_contiguous(memory_format=torch.channels_last)))
            and (vec is None or (vec.shape == (x.shape[1],) and vec.device == x.device and vec.dtype == x.dtype
                                 and vec.is_contiguous())))


def chunks(P: int, B: int, target: int = 1024) -> int:
    """Chunks of rows per image: the largest divisor of P (pixels) with B * chunks <= target, at least 1,
    and at most 256 (the apply kernel combines all of an image's partials in one block)."""
    want = max(1, min(256, target // max(B, 1), P))
    for n in range(want, 0, -1):
        if P % n == 0:
            return n
    return 1


def _channels_last(*ys: torch.Tensor):
    """The CUDA ops' reference path: its outputs in the layout the kernels write, channels-last, whatever the input's
    (F.group_norm returns NCHW there), as `_empty_out` states for a compiled graph's stride checks."""
    out = tuple(y.contiguous(memory_format=torch.channels_last) for y in ys)
    return out if len(out) > 1 else out[0]


def _empty_out(x: torch.Tensor) -> torch.Tensor:
    """The fake implementations' output: on CUDA channels-last on every path (the kernels write it, the reference
    path is made to); on the CPU the reference's own layout, x's (so the CPU decoder stays bit for bit the
    tokenizer's)."""
    return torch.empty_like(x, memory_format=torch.channels_last) if x.device.type == "cuda" else torch.empty_like(x)


def _fallback(x: torch.Tensor) -> None:
    fallbacks["cuda"] += triton is not None
    if fallbacks["cuda"] == 1:
        log.warning("group_norm_silu: %s %s input (strides %s) is not what the kernels take; reference used",
                    tuple(x.shape), x.dtype, x.stride())


def _launch(x, in_bias, res, weight, bias, groups, eps, silu, taps=None):
    """(s, y): y = GroupNorm (+ SiLU) of v = x + in_bias (+ res); s = v, written only where res is given.
    With taps (C, TAPS): y is `group_norm_silu_taps`' partial products instead (SiLU applied)."""
    B, C, H, W = x.shape
    P = H * W
    n = chunks(P, B)  # statistics: more, shorter programs (their loop waits on each load)
    na = chunks(P, B, target=512)  # apply: fewer, longer ones (each first combines the n partials)
    part = torch.empty(B, n, groups, 2, device=x.device, dtype=torch.float32)
    add = res is not None
    s = torch.empty_like(x, memory_format=torch.channels_last) if add else x
    if taps is not None:
        y = torch.empty(B, H, W, TAPS, device=x.device, dtype=torch.float32)
    else:
        y = torch.empty_like(x, memory_format=torch.channels_last)
    xb = in_bias if in_bias is not None else weight  # an unread pointer where there is no bias
    order = int(L2_ORDER)
    _gn_stats_kernel[(B * n,)](x, xb, res if add else x, s, part, P, P // n, B, n, C=C, G=groups,
                               BLOCK_P=max(1, min(32, 4096 // C)), XBIAS=in_bias is not None, ADD=add, ORDER=order,
                               num_warps=4)
    # the apply pass reads the written sum, or x (+ its bias) again
    if taps is not None:
        _gn_taps_kernel[(B * na,)](s, xb, taps, y, part, weight, bias, P, P // na, n, P // n, B, na, float(eps), C=C,
                                   G=groups, BLOCK_P=max(16, min(64, 8192 // C)), NCH=triton.next_power_of_2(n),
                                   K=TAPS, XBIAS=in_bias is not None and not add, ORDER=order, num_warps=4)
        return s, y
    _gn_apply_kernel[(B * na,)](s, xb, y, part, weight, bias, P, P // na, n, P // n, B, na, float(eps), C=C, G=groups,
                                BLOCK_P=max(1, min(64, 8192 // C)), NCH=triton.next_power_of_2(n), SILU=bool(silu),
                                XBIAS=in_bias is not None and not add, ORDER=order, num_warps=4)
    return s, y


@torch.library.impl(_lib, "group_norm_silu", "CPU")
def _group_norm_silu_cpu(x, weight, bias, groups, eps, silu, in_bias=None):
    return group_norm_silu_ref(x, weight, bias, groups, eps, silu, in_bias)


@torch.library.impl(_lib, "group_norm_silu", "CUDA")
def _group_norm_silu_cuda(x, weight, bias, groups, eps, silu, in_bias=None):
    if not (kernel_available(x, groups) and _like(x, None, in_bias)):
        _fallback(x)
        return _channels_last(group_norm_silu_ref(x, weight, bias, groups, eps, silu, in_bias))
    return _launch(x, in_bias, None, weight, bias, groups, eps, silu)[1]


@torch.library.register_fake("flexvar::group_norm_silu")
def _group_norm_silu_fake(x, weight, bias, groups, eps, silu, in_bias=None):
    return _empty_out(x)


@torch.library.impl(_lib, "add_group_norm_silu", "CPU")
def _add_group_norm_silu_cpu(a, b, weight, bias, groups, eps, silu, b_bias=None):
    return add_group_norm_silu_ref(a, b, weight, bias, groups, eps, silu, b_bias)


@torch.library.impl(_lib, "add_group_norm_silu", "CUDA")
def _add_group_norm_silu_cuda(a, b, weight, bias, groups, eps, silu, b_bias=None):
    if not (kernel_available(b, groups) and _like(b, a, b_bias)):
        _fallback(b)
        return _channels_last(*add_group_norm_silu_ref(a, b, weight, bias, groups, eps, silu, b_bias))
    return _launch(b, b_bias, a, weight, bias, groups, eps, silu)


@torch.library.register_fake("flexvar::add_group_norm_silu")
def _add_group_norm_silu_fake(a, b, weight, bias, groups, eps, silu, b_bias=None):
    return _empty_out(a), _empty_out(a)


def _taps_like(x: torch.Tensor, taps: torch.Tensor) -> bool:
    return (x.shape[1] <= 256 and taps.shape == (x.shape[1], TAPS) and taps.dtype == x.dtype
            and taps.device == x.device and taps.is_contiguous())


@torch.library.impl(_lib, "group_norm_silu_taps", "CPU")
def _group_norm_silu_taps_cpu(x, weight, bias, groups, eps, taps, in_bias=None, res=None):
    return group_norm_silu_taps_ref(x, weight, bias, groups, eps, taps, in_bias, res)


@torch.library.impl(_lib, "group_norm_silu_taps", "CUDA")
def _group_norm_silu_taps_cuda(x, weight, bias, groups, eps, taps, in_bias=None, res=None):
    if not (kernel_available(x, groups) and _like(x, res, in_bias) and _taps_like(x, taps)):
        _fallback(x)
        return group_norm_silu_taps_ref(x, weight, bias, groups, eps, taps, in_bias, res).contiguous()
    return _launch(x, in_bias, res, weight, bias, groups, eps, True, taps)[1]


@torch.library.register_fake("flexvar::group_norm_silu_taps")
def _group_norm_silu_taps_fake(x, weight, bias, groups, eps, taps, in_bias=None, res=None):
    B, _, H, W = x.shape
    return x.new_empty(B, H, W, TAPS, dtype=torch.float32)


def group_norm_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float,
                    silu: bool, in_bias: torch.Tensor | None = None) -> torch.Tensor:
    """The op: GroupNorm (+ SiLU) of x + in_bias in the Triton kernels where `kernel_available` (in_bias, if any,
    (C,) on x's device), else `group_norm_silu_ref`."""
    return torch.ops.flexvar.group_norm_silu(x, weight, bias, int(groups), float(eps), bool(silu), in_bias)


def add_group_norm_silu(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int,
                        eps: float, silu: bool,
                        b_bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The op: (s, group_norm_silu(s)) with s = a + (b + b_bias), in the kernels' passes where `kernel_available`
    (a and b of one shape, dtype and channels-last layout), else `add_group_norm_silu_ref`."""
    return torch.ops.flexvar.add_group_norm_silu(a, b, weight, bias, int(groups), float(eps), bool(silu), b_bias)


def group_norm_silu_taps(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float,
                         taps: torch.Tensor, in_bias: torch.Tensor | None = None,
                         res: torch.Tensor | None = None) -> torch.Tensor:
    """The op: GroupNorm + SiLU of v = x + in_bias (+ res, added as `add_group_norm_silu` adds it) times `taps`
    (`conv_taps` of a 3x3 convolution's filters, x's dtype) per pixel: (B, H, W, TAPS) float32, for
    `conv_from_taps`. The kernels where `kernel_available` and C <= 256, else `group_norm_silu_taps_ref`."""
    return torch.ops.flexvar.group_norm_silu_taps(x, weight, bias, int(groups), float(eps), taps, in_bias, res)


if triton is not None:
    @triton.jit
    def _load_v(X, XB, A, idx, rc, m, XBIAS: tl.constexpr, ADD: tl.constexpr):
        # the normalised values at idx ((rows, C) offsets, rows masked by m): X (+ XB per channel) (+ A), each
        # addition rounded to X's dtype as the separate PyTorch operations round; float32 and X's dtype
        v = tl.load(X + idx, mask=m, other=0.0)
        if XBIAS:
            v = (v.to(tl.float32) + tl.load(XB + rc).to(tl.float32)[None, :]).to(X.dtype.element_ty)
        if ADD:
            v = (v.to(tl.float32) + tl.load(A + idx, mask=m, other=0.0).to(tl.float32)).to(X.dtype.element_ty)
        return v.to(tl.float32), v

    @triton.jit
    def _chunk(B, n, LAST_FIRST: tl.constexpr, ORDER: tl.constexpr):
        # (image, chunk) of this program among B * n: ORDER 0 interleaves the images (program i takes chunk i // B of
        # image i % B); ORDER 1 goes image by image, from the tensor's end if LAST_FIRST (see `L2_ORDER`)
        i = tl.program_id(0)
        if ORDER == 0:
            b = i % B
            c = i // B
        else:
            if LAST_FIRST:
                i = B * n - 1 - i
            b = i // n
            c = i % n
        return b, c

    @triton.jit
    def _gn_stats_kernel(X, XB, A, S, PART, P, rows, B, n, C: tl.constexpr, G: tl.constexpr, BLOCK_P: tl.constexpr,
                         XBIAS: tl.constexpr, ADD: tl.constexpr, ORDER: tl.constexpr):
        # the statistics of v = X (+ XB) (+ A) (`_load_v`); with ADD, v is also written to S
        b, c = _chunk(B, n, True, ORDER)
        rc = tl.arange(0, C)
        row0 = c * rows
        off = b.to(tl.int64) * P * C
        shift, _ = _load_v(X, XB, A, off + row0 * C + rc[None, :], rc, rc[None, :] < C, XBIAS, ADD)
        shift = tl.reshape(shift, [C])
        # (BLOCK_P, C) partial sums in registers: the loop is loads and adds only, no reduction across
        # warps (and no barrier) per iteration; the rows are summed once after it
        s1 = tl.zeros([BLOCK_P, C], tl.float32)
        s2 = tl.zeros([BLOCK_P, C], tl.float32)
        for r0 in tl.range(0, rows, BLOCK_P, num_stages=3):  # loads 2 iterations ahead (cp.async)
            rp = r0 + tl.arange(0, BLOCK_P)
            m = rp < rows
            idx = off + (row0 + rp)[:, None] * C + rc[None, :]
            x, v = _load_v(X, XB, A, idx, rc, m[:, None], XBIAS, ADD)
            if ADD:
                tl.store(S + idx, v, mask=m[:, None])
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
    def _scale_shift(PART, Wt, Bs, b, n, stat_rows, eps, C: tl.constexpr, G: tl.constexpr, NCH: tl.constexpr):
        # image b's per-channel (scale, shift) of the normalisation, from the statistics' n partials (equal counts,
        # so the combination is exact): y = x * scale + shift
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
        return scale, shift

    @triton.jit
    def _gn_apply_kernel(X, XB, Y, PART, Wt, Bs, P, rows, n, stat_rows, B, na, eps, C: tl.constexpr,
                         G: tl.constexpr, BLOCK_P: tl.constexpr, NCH: tl.constexpr, SILU: tl.constexpr,
                         XBIAS: tl.constexpr, ORDER: tl.constexpr):
        b, c = _chunk(B, na, False, ORDER)
        scale, shift = _scale_shift(PART, Wt, Bs, b, n, stat_rows, eps, C, G, NCH)
        rc = tl.arange(0, C)
        row0 = c * rows
        off = b.to(tl.int64) * P * C
        for r0 in tl.range(0, rows, BLOCK_P, num_stages=3):
            rp = r0 + tl.arange(0, BLOCK_P)
            m = rp < rows
            idx = off + (row0 + rp)[:, None] * C + rc[None, :]
            x, _ = _load_v(X, XB, X, idx, rc, m[:, None], XBIAS, False)
            y = x * scale[None, :] + shift[None, :]
            if SILU:
                y = y / (1.0 + tl.exp(-y))
            tl.store(Y + idx, y.to(Y.dtype.element_ty), mask=m[:, None])

    @triton.jit
    def _gn_taps_kernel(X, XB, TW, T, PART, Wt, Bs, P, rows, n, stat_rows, B, na, eps, C: tl.constexpr,
                        G: tl.constexpr, BLOCK_P: tl.constexpr, NCH: tl.constexpr, K: tl.constexpr, XBIAS: tl.constexpr,
                        ORDER: tl.constexpr):
        # the apply pass of GroupNorm + SiLU, each normalised row (rounded to X's dtype) times TW (C, K) into T
        # (P rows of K float32 per image) instead of written out
        b, c = _chunk(B, na, False, ORDER)
        scale, shift = _scale_shift(PART, Wt, Bs, b, n, stat_rows, eps, C, G, NCH)
        rc = tl.arange(0, C)
        rk = tl.arange(0, K)
        w = tl.load(TW + rc[:, None] * K + rk[None, :])
        row0 = c * rows
        off = b.to(tl.int64) * P * C
        toff = b.to(tl.int64) * P * K
        for r0 in tl.range(0, rows, BLOCK_P, num_stages=3):
            rp = r0 + tl.arange(0, BLOCK_P)
            m = rp < rows
            x, _ = _load_v(X, XB, X, off + (row0 + rp)[:, None] * C + rc[None, :], rc, m[:, None], XBIAS, False)
            y = x * scale[None, :] + shift[None, :]
            y = y / (1.0 + tl.exp(-y))
            t = tl.dot(y.to(TW.dtype.element_ty), w)
            tl.store(T + toff + (row0 + rp)[:, None] * K + rk[None, :], t, mask=m[:, None])
