"""The fast runtime's copy of the tokenizer decoder: the same parameters (not copied), other ways to compute.

- `with_product_attention`: attention blocks as two batched products and a float32 softmax;
- `with_group_norm_op`: GroupNorms (+ the SiLU after them) as the `group_norm_silu` op;
- `ResidualGroupNorm`: the GroupNorm op's copy run so that the bias of the convolution before each GroupNorm,
  and each residual sum that a GroupNorm normalises next, are added by that GroupNorm's kernels
  (`group_norm_silu(..., in_bias)`, `add_group_norm_silu`) instead of in passes of their own;
- `ResidualGroupNorm(conv_out_taps=True)`: the decoder's end (norm_out, swish, conv_out 3x3 to 3 channels) as
  `group_norm_silu_taps` (the GroupNorm's apply pass writes each pixel's 27 float32 (tap, channel) partial products
  instead of the normalised tensor) + `conv_from_taps` (each output pixel sums its neighbours' partials);
- `with_folded_upsample`: each nearest x2 upsample + 3x3 convolution as one stride-2 transposed convolution
  with 4x4 filters folded once from the 3x3 ones ("transpose"): 16 instead of 36 multiply-adds per input pixel
  and channel pair, and no upsampled copy of the input.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .kernels.group_norm import (add_channel_bias, add_group_norm_silu, conv_from_taps, conv_taps, group_norm_silu,
                                 group_norm_silu_taps)
from .vqvae import AttnBlock, ResBlock, Upsample, spatial_attention

UPSAMPLE_MODES = ("nearest", "transpose")

# Nearest x2 then a 3-tap filter f = (f0, f1, f2) along one axis, written per output phase a (row 2i + a):
#   a = 0: f0 x[i-1] + (f1 + f2) x[i];   a = 1: (f0 + f1) x[i] + f2 x[i+1].
# As a stride-2 transposed convolution with padding 1, output o = 2i + a takes input j through tap
# k = o + 1 - 2j (j = i-1, i, i+1 -> k = a+3, a+1, a-1), so its 4-tap filter is
# (f2, f1 + f2, f0 + f1, f0) = _FOLD4 @ f.
_FOLD4 = ((0., 0., 1.), (0., 1., 1.), (1., 1., 0.), (1., 0., 0.))


def fold_upsample_transpose(w_OI33: torch.Tensor) -> torch.Tensor:
    """(Cout, Cin, 3, 3) filters of nearest x2 + conv (padding 1) -> (Cin, Cout, 4, 4) filters of the equal
    `conv_transpose2d(x, w, stride=2, padding=1)`, computed in float64, returned in float32."""
    A = torch.tensor(_FOLD4, dtype=torch.float64, device=w_OI33.device)
    return torch.einsum("ar,bs,oirs->ioab", A, A, w_OI33.double()).float()


class FoldedUpsample(nn.Module):
    """`vqvae.Upsample` (nearest x2 then a 3x3 convolution) as one stride-2 transposed convolution with filters
    folded once from its own (buffers derived from the module's weights when built: rebuild after changing
    them). Same result up to rounding: in float32 within ~1e-6 relative."""

    def __init__(self, up: Upsample):
        super().__init__()
        w, b = up.conv.weight.detach(), up.conv.bias.detach()
        with torch.no_grad():
            self.register_buffer("weight", fold_upsample_transpose(w).to(w.dtype), persistent=False)
        self.register_buffer("bias", b.clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, self.weight, self.bias, stride=2, padding=1)


def share_copy(module: nn.Module) -> nn.Module:
    """A structural copy of the module with the same parameters and buffers (not copied)."""
    return copy.deepcopy(module, memo={id(t): t for t in list(module.parameters()) + list(module.buffers())})


def _replace(decoder: nn.Module, kind, make) -> nn.Module:
    """A copy of the decoder (same parameters) with every submodule of type `kind` replaced by make(it)."""
    dec = share_copy(decoder)
    for parent in list(dec.modules()):
        for name, child in parent.named_children():
            if isinstance(child, kind):
                setattr(parent, name, make(child))
    return dec


def with_folded_upsample(decoder: nn.Module, mode: str) -> nn.Module:
    """A copy of the decoder (same parameters) whose `Upsample`s are `FoldedUpsample`s ("transpose");
    "nearest": the decoder itself."""
    if mode not in UPSAMPLE_MODES:
        raise ValueError(f"upsample takes one of {', '.join(UPSAMPLE_MODES)}, not {mode!r}")
    return decoder if mode == "nearest" else _replace(decoder, Upsample, FoldedUpsample)


class _GroupNormOp(nn.Module):
    """A decoder GroupNorm as the `group_norm_silu` op (Triton kernels on channels-last fp16/bf16 CUDA
    activations), sharing the original module's parameters; `forward_silu` fuses the SiLU that follows
    it (`vqvae.norm_silu`)."""

    def __init__(self, gn: nn.GroupNorm):
        super().__init__()
        self.weight, self.bias = gn.weight, gn.bias
        self.groups, self.eps = gn.num_groups, gn.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return group_norm_silu(x, self.weight, self.bias, self.groups, self.eps, False)

    def forward_silu(self, x: torch.Tensor) -> torch.Tensor:
        return group_norm_silu(x, self.weight, self.bias, self.groups, self.eps, True)


def with_group_norm_op(decoder: nn.Module) -> nn.Module:
    """A copy of the decoder (same parameters, not copied) whose GroupNorms are `_GroupNormOp`s (the
    tokenizer's are all affine)."""
    return _replace(decoder, nn.GroupNorm, _GroupNormOp)


def product_attention(q_BNC: torch.Tensor, k_BNC: torch.Tensor, v_BNC: torch.Tensor,
                      max_tokens: int = 1024) -> torch.Tensor:
    """`vqvae.spatial_attention` as two batched products and a float32 softmax: for the tokenizer's one
    head of 128-512 channels SDPA has no flash or cuDNN kernel and runs its memory-efficient one (~22 us
    per block at batch 1 on the H100 for 16x16 latents), while each product is one GEMM. The scores are
    (B, N, N) float32, so past `max_tokens` positions `spatial_attention` runs instead."""
    N, C = q_BNC.shape[1:]
    if N > max_tokens:
        return spatial_attention(q_BNC, k_BNC, v_BNC)
    s = torch.bmm(q_BNC, k_BNC.transpose(1, 2)).float() * C ** -0.5
    return torch.bmm(torch.softmax(s, dim=-1).to(v_BNC.dtype), v_BNC)


def with_product_attention(decoder: nn.Module) -> nn.Module:
    """A copy of the decoder (same parameters) whose attention blocks attend with `product_attention`."""
    dec = share_copy(decoder)
    for m in dec.modules():
        if isinstance(m, AttnBlock):
            m.attend = product_attention
    return dec


def _unbiased_conv(conv: nn.Conv2d, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(the convolution's output without its bias, the bias): the GroupNorm op adds the bias as it loads."""
    return F.conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups), conv.bias


def _norm(norm: _GroupNormOp, x: torch.Tensor, x_bias: torch.Tensor | None, silu: bool) -> torch.Tensor:
    """norm(x + x_bias), then swish if `silu`."""
    return group_norm_silu(x, norm.weight, norm.bias, norm.groups, norm.eps, silu, x_bias)


def _add_norm(norm: _GroupNormOp, x: torch.Tensor, pending: tuple | None, silu: bool):
    """(s, norm(s), then swish if `silu`) with s = x + (t + t_bias) for pending = (t, t_bias), or x."""
    if pending is None:
        return x, _norm(norm, x, None, silu)
    t, t_bias = pending
    return add_group_norm_silu(x, t, norm.weight, norm.bias, norm.groups, norm.eps, silu, t_bias)


class ResidualGroupNorm(nn.Module):
    """The decoder (a `with_group_norm_op` copy of it, made here: same parameters) run so that its GroupNorm ops
    take in what would otherwise be passes of their own over the activations: the bias of the convolution before
    each (Inductor runs a convolution without its bias on CUDA and adds it in the consumer, which cannot be an
    opaque op) and each block's residual sum, left pending until the next module (a GroupNorm forms it in its
    statistics pass, `add_group_norm_silu`; an upsampling adds it first). The decoder's own arithmetic, with each
    convolution's bias added after it (as Inductor computes it on CUDA), each addition rounded as in PyTorch.
    conv_out_taps: the end (norm_out, swish, conv_out) as `group_norm_silu_taps` + `conv_from_taps`, with conv_out's
    filters laid out once when built (rebuild after changing them); needs a conv_out of at most 3 channels."""

    def __init__(self, decoder: nn.Module, conv_out_taps: bool = False):
        super().__init__()
        self.decoder = with_group_norm_op(decoder)
        with torch.no_grad():
            taps = conv_taps(self.decoder.conv_out.weight.detach()) if conv_out_taps else None
        self.register_buffer("taps", taps, persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        d = self.decoder
        x, pending = d.conv_in(z), None  # pending: (t, t_bias) to add to x
        for m in d.sequence():
            if isinstance(m, ResBlock):  # ResBlock.forward with the biases and the sum deferred
                x, y = _add_norm(m.norm1, x, pending, True)
                h, h_bias = _unbiased_conv(m.conv1, y)
                x, pending = m.skip(x), _unbiased_conv(m.conv2, _norm(m.norm2, h, h_bias, True))
            elif isinstance(m, AttnBlock):
                x, h = _add_norm(m.norm, x, pending, False)
                pending = (m.branch(h), None)
            else:  # resampling
                x, pending = m(x if pending is None else x + add_channel_bias(*pending)), None
        if self.taps is None:
            return d.conv_out(_add_norm(d.norm_out, x, pending, True)[1])
        n = d.norm_out
        t, t_bias, res = (x, None, None) if pending is None else (*pending, x)
        parts = group_norm_silu_taps(t, n.weight, n.bias, n.groups, n.eps, self.taps, t_bias, res)
        return conv_from_taps(parts, d.conv_out.bias, x.dtype)
