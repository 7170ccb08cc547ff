"""The fast runtime's decoder copies (product attention, folded upsampling, the GroupNorm op and its fusions, the
decoder's end as taps) against the tokenizer's decoder, float32 on CPU."""

import pytest
import torch
import torch.nn.functional as F

from flexvar.fast import FastRuntime

from conftest import rel_err


def test_product_attention_decoder_is_the_decoder(pipe_test):
    """The fast runtime's decoder copy attends with two products and a float32 softmax: it shares the
    tokenizer's parameters, leaves the tokenizer's own blocks on SDPA, and decodes as the tokenizer does
    (float32, to 1e-5); the attention alone equals SDPA's on fresh inputs, and past max_tokens it is SDPA."""
    from flexvar.fast import product_attention, with_product_attention
    from flexvar.vqvae import AttnBlock, spatial_attention
    vae = pipe_test.vae
    dec = with_product_attention(vae.decoder)
    assert {id(p) for p in dec.parameters()} == {id(p) for p in vae.decoder.parameters()}
    ours = [m for m in dec.modules() if isinstance(m, AttnBlock)]
    theirs = [m for m in vae.decoder.modules() if isinstance(m, AttnBlock)]
    assert ours and all(m.attend is product_attention for m in ours)
    assert all(m.attend is spatial_attention for m in theirs)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, vae.cfg.z_channels, 3, 5, generator=g)
    q, k, v = (torch.randn(3, 24, 64, generator=g) * 3 for _ in range(3))
    with torch.no_grad():
        assert rel_err(dec(z), vae.decoder(z)) < 1e-5
        assert rel_err(product_attention(q, k, v), spatial_attention(q, k, v)) < 1e-5
        assert torch.equal(product_attention(q, k, v, max_tokens=8), spatial_attention(q, k, v))


def test_group_norm_op_decoder_is_the_decoder(pipe_test):
    """The fast runtime's decoder with its GroupNorms as the group_norm_silu op (the reference on CPU)
    shares the tokenizer's parameters and decodes exactly as the tokenizer does."""
    from flexvar.fast import with_group_norm_op
    from flexvar.kernels.group_norm import group_norm_silu, group_norm_silu_ref
    vae = pipe_test.vae
    dec = with_group_norm_op(vae.decoder)
    assert {id(p) for p in dec.parameters()} == {id(p) for p in vae.decoder.parameters()}
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in dec.modules())
    z = torch.randn(2, vae.cfg.z_channels, 3, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(dec(z), vae.decoder(z))
    x = torch.randn(2, 64, 4, 4)
    w, b = torch.randn(64), torch.randn(64)
    assert torch.equal(group_norm_silu(x, w, b, 32, 1e-6, True), F.silu(F.group_norm(x, 32, w, b, 1e-6)))
    assert torch.equal(group_norm_silu_ref(x, w, b, 32, 1e-6, False), F.group_norm(x, 32, w, b, 1e-6))


@pytest.mark.parametrize("C, h, w", [(8, 5, 7), (16, 1, 1), (4, 3, 2), (32, 6, 6), (3, 2, 9)], ids=str)
def test_folded_upsample_is_the_upsample(C, h, w):
    """Nearest x2 + 3x3 convolution as one transposed convolution with filters folded once = the module as
    written, float32 to 1e-5 with fresh random filters and inputs, any (h, w)."""
    from flexvar.fast_decoder import FoldedUpsample
    from flexvar.vqvae import Upsample
    g = torch.Generator().manual_seed(C * 100 + h * 10 + w)
    up = Upsample(C)
    with torch.no_grad():
        up.conv.weight.copy_(torch.randn(up.conv.weight.shape, generator=g))
        up.conv.bias.copy_(torch.randn(C, generator=g))
    x = torch.randn(2, C, h, w, generator=g)
    with torch.no_grad():
        want, got = up(x), FoldedUpsample(up)(x)
    assert got.shape == want.shape == (2, C, 2 * h, 2 * w)
    assert rel_err(got, want) < 1e-5


def test_folded_upsample_decoder_is_the_decoder(pipe_test):
    """The decoder copy with folded upsampling shares the tokenizer's parameters, leaves the tokenizer's own
    Upsample modules alone and decodes as it does (float32, to 1e-5); FastRuntime takes the mode by name
    (CPU default: as written) and refuses others."""
    from flexvar.fast_decoder import FoldedUpsample, with_folded_upsample
    from flexvar.vqvae import Upsample
    vae = pipe_test.vae
    z = torch.randn(2, vae.cfg.z_channels, 3, 5, generator=torch.Generator().manual_seed(3))
    assert with_folded_upsample(vae.decoder, "nearest") is vae.decoder
    dec = with_folded_upsample(vae.decoder, "transpose")
    assert {id(p) for p in dec.parameters()} <= {id(p) for p in vae.decoder.parameters()}
    assert not any(isinstance(m, Upsample) for m in dec.modules())
    assert len([m for m in dec.modules() if isinstance(m, FoldedUpsample)]) == len(
        [m for m in vae.decoder.modules() if isinstance(m, Upsample)]) > 0
    with torch.no_grad():
        assert rel_err(dec(z), vae.decoder(z)) < 1e-5
    rt = FastRuntime(pipe_test.model, vae, upsample="transpose")
    codes = torch.randint(0, vae.cfg.codebook_size, (2, 3, 5), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():  # uint8 pixels: equal but where the ~1e-7 difference crosses a rounding boundary
        diff = rt.decode(codes).int() - FastRuntime(pipe_test.model, vae).decode(codes).int()
    assert rt.upsample == "transpose" and diff.abs().max() <= 1
    assert FastRuntime(pipe_test.model, vae).upsample == "nearest"
    with pytest.raises(ValueError, match="upsample takes one of nearest, transpose, not 'bilinear'"):
        FastRuntime(pipe_test.model, vae, upsample="bilinear")


def test_residual_group_norm_decoder_is_the_decoder(pipe_test):
    """The decoder run with its convolutions' biases and residual sums added by the next GroupNorm op (the ops'
    references on CPU) shares the tokenizer's parameters and decodes as the decoder does (float32, to 1e-5); the
    ops' definitions: GroupNorm of x + in_bias, and s = a + (b + b_bias) with its GroupNorm."""
    from flexvar.fast import ResidualGroupNorm
    from flexvar.kernels.group_norm import add_group_norm_silu, group_norm_silu
    vae = pipe_test.vae
    z = torch.randn(2, vae.cfg.z_channels, 3, 5, generator=torch.Generator().manual_seed(6))
    for taps in (False, True):
        fused = ResidualGroupNorm(vae.decoder, conv_out_taps=taps)
        assert {id(p) for p in fused.parameters()} == {id(p) for p in vae.decoder.parameters()}
        assert not any(isinstance(m, torch.nn.GroupNorm) for m in fused.modules())
        assert (fused.taps is not None) == taps
        with torch.no_grad():
            assert rel_err(fused(z), vae.decoder(z)) < 1e-5, taps
    g = torch.Generator().manual_seed(7)
    a, b = torch.randn(2, 64, 4, 4, generator=g), torch.randn(2, 64, 4, 4, generator=g)
    w, bias, cb = torch.randn(64, generator=g), torch.randn(64, generator=g), torch.randn(64, generator=g)
    x = b + cb.view(1, -1, 1, 1)
    assert torch.equal(group_norm_silu(b, w, bias, 32, 1e-6, False, cb), F.group_norm(x, 32, w, bias, 1e-6))
    s, y = add_group_norm_silu(a, b, w, bias, 32, 1e-6, True, cb)
    assert torch.equal(s, a + x) and torch.equal(y, F.silu(F.group_norm(a + x, 32, w, bias, 1e-6)))
    s, y = add_group_norm_silu(a, b, w, bias, 32, 1e-6, True)
    assert torch.equal(s, a + b) and torch.equal(y, F.silu(F.group_norm(a + b, 32, w, bias, 1e-6)))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_group_norm_ops_fake_layout_is_the_real_one(channels_last):
    """The GroupNorm ops' fake implementations state the strides the real ones return, for either input layout: on
    the CPU the reference's own (x's); on CUDA channels-last on every path, the kernels' and the reference path's
    (run here on CPU tensors: it is what the CUDA implementation does where the kernel does not apply; a compiled
    decoder on the GPU once failed its stride check there, F.group_norm returning NCHW where the fake said
    channels-last). The taps op: a contiguous (B, H, W, TAPS) everywhere."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from flexvar.kernels import group_norm as gn
    g = torch.Generator().manual_seed(8)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    a, b = (torch.randn(2, 64, 3, 5, generator=g).contiguous(memory_format=fmt) for _ in range(2))
    w, bias, cb = torch.randn(64, generator=g), torch.randn(64, generator=g), torch.randn(64, generator=g)
    taps = torch.randn(64, gn.TAPS, generator=g)
    ops = torch.ops.flexvar
    calls = [(ops.group_norm_silu, gn._group_norm_silu_cuda, (b, w, bias, 32, 1e-6, True, cb)),
             (ops.add_group_norm_silu, gn._add_group_norm_silu_cuda, (a, b, w, bias, 32, 1e-6, True, cb)),
             (ops.group_norm_silu_taps, gn._group_norm_silu_taps_cuda, (b, w, bias, 32, 1e-6, taps, cb, a))]

    def strides(out):
        return [t.stride() for t in (out if isinstance(out, tuple) else (out,))]

    for op, cuda_impl, args in calls:
        for device in ("cpu", "cuda"):
            with FakeTensorMode():
                fake = op(*(torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=device)
                            if isinstance(t, torch.Tensor) else t for t in args))
            real = op(*args) if device == "cpu" else cuda_impl(*args)
            assert strides(real) == strides(fake), (op, device)
            if device == "cuda":
                keep = torch.contiguous_format if op is ops.group_norm_silu_taps else torch.channels_last
                assert all(t.is_contiguous(memory_format=keep) for t in (real if isinstance(real, tuple) else (real,)))
        want = op(*args)
        got = cuda_impl(*args)
        assert all(torch.equal(x, y) for x, y in zip(*(o if isinstance(o, tuple) else (o,) for o in (got, want))))


@pytest.mark.parametrize("B, C, H, W, n_out", [(2, 64, 5, 7, 3), (1, 64, 1, 1, 3), (3, 128, 4, 9, 1), (1, 32, 2, 3, 2)],
                         ids=str)
def test_group_norm_silu_taps_is_the_convolution(B, C, H, W, n_out):
    """The decoder's end as the taps op: `conv_from_taps` of `group_norm_silu_taps` (their references on CPU) =
    F.conv2d (3x3, padding 1) of GroupNorm + SiLU of x + in_bias (+ a residual), float32 to 1e-5, fresh random
    inputs; `conv_taps` lays filter o's tap (dy, dx) in column (3 dy + dx) n_out + o and refuses what does not fit."""
    from flexvar.kernels import group_norm as GN
    g = torch.Generator().manual_seed(B * C + H * W + n_out)
    a, b = (torch.randn(B, C, H, W, generator=g) * 2 + 0.5 for _ in range(2))
    w, bias, cb = (torch.randn(C, generator=g) for _ in range(3))
    cw, cbias = torch.randn(n_out, C, 3, 3, generator=g) * C ** -0.5, torch.randn(n_out, generator=g)
    taps = GN.conv_taps(cw)
    assert taps.shape == (C, GN.TAPS) and torch.equal(taps[:, 9 * n_out:], torch.zeros(C, GN.TAPS - 9 * n_out))
    assert torch.equal(taps[:, (3 * 2 + 1) * n_out + n_out - 1], cw[n_out - 1, :, 2, 1])
    for in_bias, res in ((None, None), (cb, None), (None, a), (cb, a)):
        v = GN.add_channel_bias(b, in_bias)
        v = v if res is None else res + v
        want = F.conv2d(F.silu(F.group_norm(v, 32, w, bias, 1e-6)), cw, cbias, padding=1)
        got = GN.conv_from_taps(GN.group_norm_silu_taps(b, w, bias, 32, 1e-6, taps, in_bias, res), cbias, torch.float32)
        assert got.shape == want.shape and rel_err(got, want) < 1e-5, (in_bias is None, res is None)
    with pytest.raises(ValueError, match="at most 3 output channels"):
        GN.conv_taps(torch.randn(4, C, 3, 3))
    with pytest.raises(ValueError, match="3x3 filters"):
        GN.conv_taps(torch.randn(3, C, 5, 5))


def test_fast_runtime_decoder_copies(pipe_test):
    """FastRuntime's decoder options (the references run on CPU): with the GroupNorm op on, the decoder for batches
    of at least group_norm_min_batch is `ResidualGroupNorm` over the op's copy (group_norm_fuse, default; its end as
    the taps op with conv_out_taps, default) or the copy itself; every choice decodes the same images as the
    tokenizer (uint8, within one level)."""
    from flexvar.fast import ResidualGroupNorm
    m, vae = pipe_test.model, pipe_test.vae
    codes = torch.randint(0, vae.cfg.codebook_size, (2, 3, 3), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        want = FastRuntime(m, vae).decode(codes).int()
        for fuse, taps in ((True, True), (True, False), (False, True)):
            rt = FastRuntime(m, vae, group_norm_op=True, group_norm_min_batch=2, group_norm_fuse=fuse,
                             upsample="transpose", conv_out_taps=taps)
            assert isinstance(rt.decoder_gn, ResidualGroupNorm) == fuse
            assert fuse is False or (rt.decoder_gn.taps is not None) == taps
            assert (rt.decode(codes).int() - want).abs().max() <= 1
    assert FastRuntime(m, vae).decoder_gn is None  # CPU default: no GroupNorm op


def test_group_norm_chunks_divide_the_pixels():
    from flexvar.kernels.group_norm import chunks
    assert chunks(65536, 32) == 32 and chunks(65536, 1) == 256 and chunks(256, 32) == 32
    for P, B in [(2304, 3), (147456, 32), (7, 1), (1, 64), (36, 2)]:
        n = chunks(P, B)
        assert P % n == 0 and 1 <= n <= 256 and (B * n <= 1024 or n == 1)
