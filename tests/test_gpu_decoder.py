"""GPU checks of the fast tokenizer decoder (marked gpu; skipped without CUDA): the GroupNorm op's kernels (biases,
residual sums, the output convolution's taps, both program orders), the decoder's attention and folded upsampling,
each against its reference, and the fast decoder against the plain one."""
import copy

import pytest
import torch
import torch.nn.functional as F

from flexvar.fast import FastRuntime

from conftest import rel_err

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("B, C, H, W, mu", [(2, 128, 16, 16, 0.0), (4, 128, 256, 256, 3.0), (3, 256, 20, 12, -2.0),
                                            (1, 512, 16, 16, 0.5), (2, 128, 48, 48, 10.0), (5, 64, 7, 9, 0.0),
                                            (32, 256, 64, 64, 1.0)], ids=str)
def test_group_norm_silu_kernel(dtype, B, C, H, W, mu):
    """The Triton GroupNorm (+ SiLU) against F.group_norm (+ F.silu) in float32 from the same rounded input,
    channels-last, with a mean offset (the shifted statistics must not lose it)."""
    from flexvar.kernels.group_norm import group_norm_silu, group_norm_silu_ref, kernel_available
    g = torch.Generator("cuda").manual_seed(B * C + H)
    x = (torch.randn(B, C, H, W, device="cuda", generator=g) * 2 + mu).to(dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(C, device="cuda", generator=g).to(dtype)
    b = torch.randn(C, device="cuda", generator=g).to(dtype)
    assert kernel_available(x, 32)
    for silu in (False, True):
        out = group_norm_silu(x, w, b, 32, 1e-6, silu)
        ref = group_norm_silu_ref(x.float(), w.float(), b.float(), 32, 1e-6, silu)
        assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
        assert rel_err(out.float(), ref) < (2e-3 if dtype == torch.float16 else 1e-2), silu


def _gn_operands(g: torch.Generator, dtype: torch.dtype, shape: tuple, mu: float) -> tuple:
    """The GroupNorm kernel tests' inputs, drawn from g in this order: a and b (channels-last, std 2, mean mu),
    then the GroupNorm's weight and bias and a convolution bias (C,), all in dtype."""
    a, b = ((torch.randn(*shape, device="cuda", generator=g) * 2 + mu).to(dtype)
            .contiguous(memory_format=torch.channels_last) for _ in range(2))
    w, bias, cb = (torch.randn(shape[1], device="cuda", generator=g).to(dtype) for _ in range(3))
    return a, b, w, bias, cb


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("B, C, H, W, mu", [(2, 128, 16, 16, 0.0), (4, 128, 256, 256, 3.0), (3, 256, 20, 12, -2.0),
                                            (1, 512, 16, 16, 0.5), (5, 64, 7, 9, 0.0), (32, 256, 64, 64, 1.0)], ids=str)
def test_group_norm_kernels_take_bias_and_residual(dtype, B, C, H, W, mu):
    """The GroupNorm kernels adding a per-channel input bias (a convolution's) and forming a residual sum:
    the sum s = a + (b + b_bias) equals PyTorch's bit for bit; each result is F.group_norm (+ F.silu) in float32
    of the same rounded input; the ops agree with each other bit for bit; no fallback to the references."""
    from flexvar.kernels import group_norm as GN
    g = torch.Generator("cuda").manual_seed(B * C + W)
    a, b, w, bias, cb = _gn_operands(g, dtype, (B, C, H, W), mu)
    tol = 2e-3 if dtype == torch.float16 else 1e-2
    before = GN.fallbacks["cuda"]
    for silu in (False, True):
        out = GN.group_norm_silu(b, w, bias, 32, 1e-6, silu, cb)
        ref = GN.group_norm_silu_ref((b + cb.view(1, -1, 1, 1)).float(), w.float(), bias.float(), 32, 1e-6, silu)
        assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
        assert rel_err(out.float(), ref) < tol, silu
        for b_bias in (None, cb):
            want_s = a + (b if b_bias is None else b + b_bias.view(1, -1, 1, 1))
            s, out = GN.add_group_norm_silu(a, b, w, bias, 32, 1e-6, silu, b_bias)
            assert torch.equal(s, want_s) and s.is_contiguous(memory_format=torch.channels_last)
            ref = GN.group_norm_silu_ref(want_s.float(), w.float(), bias.float(), 32, 1e-6, silu)
            assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
            assert rel_err(out.float(), ref) < tol, (silu, b_bias is None)
            assert torch.equal(out, GN.group_norm_silu(want_s, w, bias, 32, 1e-6, silu))
    assert GN.fallbacks["cuda"] == before


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("B, C, H, W, mu", [(2, 128, 16, 16, 0.0), (4, 128, 256, 256, 3.0), (3, 256, 20, 12, -2.0),
                                            (5, 64, 7, 9, 0.0), (1, 32, 3, 5, 1.0), (32, 128, 64, 64, 0.5)], ids=str)
def test_group_norm_silu_taps_kernel(dtype, B, C, H, W, mu):
    """The GroupNorm kernels ending in the output convolution's partial products (`group_norm_silu_taps`), with and
    without a convolution bias and a residual sum, summed by `conv_from_taps`: against F.conv2d of F.group_norm +
    F.silu in float32 from the same rounded input (the kernel rounds the normalised values to the input's dtype
    first, as the GroupNorm's output is); the partials against the reference op's from the same input; no fallback."""
    from flexvar.kernels import group_norm as GN
    g = torch.Generator("cuda").manual_seed(B * C + H * W)
    a, b, w, bias, cb = _gn_operands(g, dtype, (B, C, H, W), mu)
    cw = (torch.randn(3, C, 3, 3, device="cuda", generator=g) * C ** -0.5).to(dtype)
    cbias = torch.randn(3, device="cuda", generator=g).to(dtype)
    taps = GN.conv_taps(cw)
    tol = 5e-3 if dtype == torch.float16 else 2e-2
    before = GN.fallbacks["cuda"]
    for in_bias, res in ((None, None), (cb, None), (None, a), (cb, a)):
        v = GN.add_channel_bias(b, in_bias)
        v = v if res is None else res + v
        parts = GN.group_norm_silu_taps(b, w, bias, 32, 1e-6, taps, in_bias, res)
        assert parts.shape == (B, H, W, GN.TAPS) and parts.dtype == torch.float32
        out = GN.conv_from_taps(parts, cbias, dtype)
        assert out.dtype == dtype and out.shape == (B, 3, H, W)
        y = GN.group_norm_silu_ref(v.float(), w.float(), bias.float(), 32, 1e-6, True)
        ref = F.conv2d(y, cw.float(), cbias.float(), padding=1)
        assert rel_err(out.float(), ref) < tol, (in_bias is None, res is None)
        want = GN.group_norm_silu_taps_ref(v.float(), w.float(), bias.float(), 32, 1e-6, taps.float())
        assert rel_err(parts, want) < tol, (in_bias is None, res is None)
    assert GN.fallbacks["cuda"] == before


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("B, C, H, W", [(4, 128, 64, 64), (3, 256, 20, 12), (5, 64, 7, 9), (1, 32, 3, 5)], ids=str)
def test_group_norm_program_orders_agree(dtype, B, C, H, W, monkeypatch):
    """`L2_ORDER` changes only which program takes which (image, chunk) when: the three ops give the same bits in
    both orders, with no fallback to the references (and the image order equals the reference to the usual
    tolerance)."""
    from flexvar.kernels import group_norm as GN
    g = torch.Generator("cuda").manual_seed(B * C + H + W)
    a, b, w, bias, cb = _gn_operands(g, dtype, (B, C, H, W), 1.0)
    taps = GN.conv_taps((torch.randn(3, C, 3, 3, device="cuda", generator=g) * C ** -0.5).to(dtype))
    outs, before = {}, GN.fallbacks["cuda"]
    for order in (True, False):
        monkeypatch.setattr(GN, "L2_ORDER", order)
        outs[order] = (GN.group_norm_silu(b, w, bias, 32, 1e-6, True, cb),
                       *GN.add_group_norm_silu(a, b, w, bias, 32, 1e-6, False, cb),
                       GN.group_norm_silu_taps(b, w, bias, 32, 1e-6, taps, cb, a))
    assert GN.fallbacks["cuda"] == before
    for new, old in zip(outs[True], outs[False]):
        assert torch.equal(new, old)
    ref = GN.group_norm_silu_ref(GN.add_channel_bias(b, cb).float(), w.float(), bias.float(), 32, 1e-6, True)
    assert rel_err(outs[True][0].float(), ref) < (2e-3 if dtype == torch.float16 else 1e-2)


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 5e-3), (torch.bfloat16, 2e-2)], ids=["fp16", "bf16"])
def test_product_attention_near_float32(dtype, tol):
    """The fast decoder's attention (two products, float32 softmax) in fp16/bf16 against SDPA in float32 on the
    same rounded inputs, at the tokenizer's shapes (16x16 latents with 512 channels, 32x32 with 256)."""
    from flexvar.fast import product_attention
    from flexvar.vqvae import spatial_attention
    g = torch.Generator("cuda").manual_seed(7)
    for B, N, C in [(1, 256, 512), (4, 1024, 256), (3, 60, 128)]:
        q, k, v = ((torch.randn(B, N, C, device="cuda", generator=g) * 2).to(dtype) for _ in range(3))
        out = product_attention(q, k, v)
        ref = spatial_attention(q.float(), k.float(), v.float())
        assert out.dtype == dtype and out.shape == (B, N, C)
        assert rel_err(out.float(), ref) < tol, (B, N, C)


def test_fast_decoder_group_norm_op(models):
    """The compiled channels-last fp16 decoder with the GroupNorm op (convolution biases and residual sums added by
    its kernels, or in passes of their own; its end as `group_norm_silu_taps` or the op and the convolution) =
    without it, to fp16 accuracy; every GroupNorm on that path ran the
    Triton kernels (none fell back to the reference)."""
    from flexvar.kernels import group_norm as GN
    model, vae = copy.deepcopy(models[0]).half(), copy.deepcopy(models[1]).half()
    before = GN.fallbacks["cuda"]
    codes = torch.randint(0, vae.cfg.codebook_size, (3, 16, 16), device="cuda", generator=torch.Generator("cuda").manual_seed(2))
    a = FastRuntime(model, vae, group_norm_op=True, group_norm_min_batch=1)
    b = FastRuntime(model, vae, group_norm_op=False)
    c = FastRuntime(model, vae, group_norm_op=True, group_norm_min_batch=1, group_norm_fuse=False)
    d = FastRuntime(model, vae, group_norm_op=True, group_norm_min_batch=1, conv_out_taps=False)
    assert a.decoder_gn.taps is not None and d.decoder_gn.taps is None
    z = vae.post_quant_conv(vae.quantize.lookup(codes)).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ya, yb, yc, yd = (a.decoder_gn(z).float(), b.decoder(z).float(), c.decoder_gn(z).float(),
                          d.decoder_gn(z).float())
    assert rel_err(ya, yb) < 1e-2 and rel_err(ya, yc) < 5e-3 and rel_err(ya, yd) < 5e-3
    assert (a.decode(codes).int() - b.decode(codes).int()).abs().float().mean() < 1.0
    assert GN.fallbacks["cuda"] == before


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 2e-3), (torch.bfloat16, 1e-2)], ids=["fp16", "bf16"])
def test_folded_upsample_near_float32(dtype, tol):
    """The folded upsampling in fp16/bf16, channels-last, eager and compiled, against the module as written in
    float32 on the same rounded inputs, at the tokenizer's upsampling shapes (512 channels at 16x16 to 128 at
    128x128) and an odd one."""
    from flexvar.fast_decoder import FoldedUpsample
    from flexvar.vqvae import Upsample
    g = torch.Generator("cuda").manual_seed(11)
    for B, C, h, w in [(1, 512, 16, 16), (2, 256, 32, 32), (1, 256, 64, 64), (2, 128, 128, 128), (3, 96, 5, 9)]:
        up = Upsample(C).cuda()
        with torch.no_grad():
            up.conv.weight.copy_(torch.randn(up.conv.weight.shape, device="cuda", generator=g) * C ** -0.5 / 3)
            up.conv.bias.copy_(torch.randn(C, device="cuda", generator=g))
        x = torch.randn(B, C, h, w, device="cuda", generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            ref = up(x.float())
            fold = FoldedUpsample(copy.deepcopy(up).to(dtype)).to(memory_format=torch.channels_last)
            for out in (fold(x), torch.compile(fold, dynamic=False)(x)):
                assert out.dtype == dtype and out.shape == ref.shape
                assert rel_err(out.float(), ref) < tol, (B, C, h, w)


def test_fast_decoder_upsample_modes(models):
    """The compiled channels-last fp16 decoder with the upsampling as a transposed convolution = as written, with
    and without the GroupNorm op, to fp16 accuracy; the decoded pixels within 1 level on average."""
    model, vae = copy.deepcopy(models[0]).half(), copy.deepcopy(models[1]).half()
    codes = torch.randint(0, vae.cfg.codebook_size, (3, 16, 16), device="cuda",
                          generator=torch.Generator("cuda").manual_seed(5))
    ref = FastRuntime(model, vae, upsample="nearest", group_norm_op=True, group_norm_min_batch=1)
    z = vae.post_quant_conv(vae.quantize.lookup(codes)).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        want = ref.decoder(z).float(), ref.decoder_gn(z).float()
    rt = FastRuntime(model, vae, upsample="transpose", group_norm_op=True, group_norm_min_batch=1)
    with torch.no_grad():
        got = rt.decoder(z).float(), rt.decoder_gn(z).float()
    assert rel_err(got[0], want[0]) < 1e-2 and rel_err(got[1], want[1]) < 1e-2
    assert (rt.decode(codes).int() - ref.decode(codes).int()).abs().float().mean() < 1.0
