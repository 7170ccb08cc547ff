"""GPU checks (marked gpu; skipped without CUDA): the CUDA kernel against its reference, the fast
runtime with CUDA graphs against the reference runtime."""
import copy
import json

import pytest
import torch
import torch.nn.functional as F

import flexvar.kernels as K
from flexvar import Pipeline
from flexvar.config import FlexVARConfig, VQVAEConfig
from flexvar.fast import FastRuntime, bicubic_taps
from flexvar.random_weights import random_tokenizer, random_transformer
from flexvar.sampling import SamplingParams, guidance_weight, guide
from flexvar.schedule import Schedule

from conftest import rel_err, smooth_image

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def models():
    model = random_transformer(FlexVARConfig.from_name("tiny"), seed=3, device="cuda")
    vae = random_tokenizer(VQVAEConfig.from_name("tiny"), seed=4, device="cuda")
    return model, vae


def test_kernels_build():
    assert K.load(), "the CUDA extension did not build"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("src, dst, C", [((1, 1), (2, 2), 64), ((8, 8), (10, 10), 1024), ((13, 13), (16, 16), 1536),
                                         ((16, 16), (23, 23), 1024), ((23, 23), (32, 32), 96), ((2, 3), (4, 7), 1024),
                                         ((16, 32), (40, 64), 128), ((5, 5), (5, 5), 1280)], ids=str)
def test_next_tokens_kernel(dtype, src, dst, C):
    g = torch.Generator("cuda").manual_seed(C + sum(dst))
    V = 8912
    proj = torch.randn(V, C, device="cuda", generator=g).to(dtype)
    bias = torch.randn(C, device="cuda", generator=g).to(dtype)
    pos = torch.randn(dst[0] * dst[1], C, device="cuda", generator=g).to(dtype)
    prev = torch.randint(0, V, (3, *src), device="cuda", generator=g)
    (ry, wy), (rx, wx) = bicubic_taps(src[0], dst[0]), bicubic_taps(src[1], dst[1])
    taps = [t.cuda() for t in (ry.int(), wy, rx.int(), wx)]
    out = torch.ops.flexvar.next_tokens(prev, proj, bias, pos, *taps)
    ref = K.next_tokens_ref(prev.cpu(), proj.cpu().float(), bias.cpu().float(), pos.cpu().float(), dst)
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert rel_err(out.cpu(), ref) < (1e-5 if dtype == torch.float32 else 1e-2)


@pytest.mark.parametrize("rule", [0, 1, 2])
@pytest.mark.parametrize("B, l, V, top_k, top_p", [(1, 1, 4096, 900, 0.95), (2, 256, 4096, 900, 0.95),
                                                   (3, 17, 8912, 0, 0.5), (1, 64, 8912, 600, 0.0),
                                                   (2, 33, 4096, 0, 0.0), (4, 9, 7, 3, 0.9), (2, 40, 300, 300, 0.99),
                                                   (1, 5, 16384, 2000, 0.9), (2, 100, 1000, 1, 0.0),
                                                   (2, 64, 8912, 900, 0.95), (1, 3, 8912, 1024, 0.8),
                                                   (3, 7, 600, 200, 0.7), (8, None, 8912, 900, 0.95),
                                                   (6, None, 8911, 900, 0.95), (6, None, 8912, 1, 0.0)], ids=str)
@pytest.mark.parametrize("kernel", ["auto", "rows", "block"])
def test_guided_sample_kernel(B, l, V, top_k, top_p, rule, kernel, monkeypatch):
    """Codes equal the reference's except, rarely, where float32 sums of the two land on either side
    of a draw's boundary; greedy (top_k = 1) codes always equal. l = None: enough tokens for 4 rows per SM
    and more (on this device), where the many-rows kernel runs, or with kernel "block" the persistent one: it
    stages rows in shared memory, with 16-byte copies (V = 8912) and 4-byte ones (V = 8911), and its blocks
    take unequal numbers of rows.
    Rule 2 (none): (B, l, V) logits already guided, sampled as given, plus a bias (the runtime's path).
    kernel: the op's own choice, or every size through the many-rows kernel (its sorted top-p path up to
    1,024 survivors, its bisection beyond) or through the one-block-per-row kernels."""
    monkeypatch.setenv("FLEXVAR_SAMPLE_KERNEL", kernel)
    assert K.load()
    l = l or persistent_tokens(B)
    g = torch.Generator("cuda").manual_seed(B * 1000 + V + top_k)
    logits = torch.randn(B if rule == K.RULE_CODES["none"] else 2 * B, l, V, device="cuda", generator=g) * 2
    seed = torch.randint(0, 2**40, (1,), device="cuda", generator=g)
    t = 1.7
    bias = torch.randn(V, device="cuda", generator=g) if rule == K.RULE_CODES["none"] else None
    out = torch.ops.flexvar.guided_sample(logits, seed, t, rule, top_k, top_p, 4, bias)
    ref = K.guided_sample_ref(logits.cpu(), seed.cpu(), t, rule, top_k, top_p, 4, None if bias is None else bias.cpu())
    assert out.shape == (B, l) and out.dtype == torch.int64
    assert torch.equal(out, torch.ops.flexvar.guided_sample(logits, seed, t, rule, top_k, top_p, 4, bias))  # deterministic
    if bias is not None:
        logits = logits + bias  # what the rest checks against
    same = (out.cpu() == ref).float().mean().item()
    assert same == 1.0 if top_k == 1 else same >= 0.99, same
    rule_name = next(n for n, c in K.RULE_CODES.items() if c == rule)
    guided = logits.cpu() if rule_name == "none" else guide(logits.cpu(), t, rule_name)
    kept = K.kept_mass_ref(guided, top_k, top_p)
    assert (kept.gather(-1, out.cpu()[..., None]) > 0).all()  # every code is a kept one


def persistent_tokens(B: int) -> int:
    """Tokens per image for at least 4 sampled rows per SM on this device, plus a remainder."""
    return -(-4 * torch.cuda.get_device_properties(0).multi_processor_count // B) + 7


@pytest.mark.parametrize("kernel", ["auto", "rows", "block"])
def test_guided_sample_kernel_with_ties(kernel, monkeypatch):
    """Many equal logits (integers): top-k and top-p keep or drop a tie group whole, as the reference does;
    the sorted top-p path (<= 1024 survivors) and the bisection (more) alike; 128 rows (one block per row)
    and 4 rows per SM and more (the persistent kernel, or the many-rows kernel); kernel as above."""
    monkeypatch.setenv("FLEXVAR_SAMPLE_KERNEL", kernel)
    assert K.load()
    g = torch.Generator("cuda").manual_seed(9)
    seed = torch.tensor([123], device="cuda")
    cases = [(top_k, top_p, B, l) for B, l in [(4, 32), (20, persistent_tokens(20))]
             for top_k, top_p in [(900, 0.95), (300, 0.5), (0, 0.9), (2000, 0.6)]]
    for top_k, top_p, B, l in cases:
        logits = (torch.randn(2 * B, l, 8912, device="cuda", generator=g) * 3).round()
        out = torch.ops.flexvar.guided_sample(logits, seed, 1.5, 1, top_k, top_p, 2)
        ref = K.guided_sample_ref(logits.cpu(), seed.cpu(), 1.5, 1, top_k, top_p, 2)
        assert (out.cpu() == ref).float().mean().item() >= 0.99, (top_k, top_p, B)
        kept = K.kept_mass_ref(guide(logits.cpu(), 1.5, "constant"), top_k, top_p)
        assert (kept.gather(-1, out.cpu()[..., None]) > 0).all(), (top_k, top_p, B)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("B, l, H, d, L, start", [(2, 1, 16, 64, 680, 0), (64, 256, 16, 64, 680, 424),
                                                  (2, 169, 24, 64, 680, 255), (4, 9, 2, 32, 20, 11),
                                                  (3, 5, 4, 128, 10, 5), (1, 3, 3, 256, 3, 0)], ids=str)
def test_qk_norm_cache_kernel(dtype, B, l, H, d, L, start):
    """q, the written keys and values and the untouched rest of the caches against the reference
    computed in float32 from the same inputs."""
    assert K.load()
    g = torch.Generator("cuda").manual_seed(B * 100 + l + d)
    qkv = (torch.randn(B, l, 3 * H * d, device="cuda", generator=g) * 3).to(dtype)
    scale = torch.rand(H, device="cuda", generator=g) * 10 + 1
    kc, vc = (torch.randn(L, B, H, d, device="cuda", generator=g).to(dtype) for _ in range(2))
    kr, vr = kc.cpu().float(), vc.cpu().float()
    q = torch.ops.flexvar.qk_norm_cache(qkv, scale, kc, vc, start)
    qr = K.qk_norm_cache_ref(qkv.cpu().float(), scale.cpu(), kr, vr, start)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert q.dtype == dtype and q.shape == (B, l, H, d)
    assert rel_err(q.cpu().float(), qr) < tol and rel_err(kc.cpu().float(), kr) < tol
    assert torch.equal(vc.cpu().float(), vr)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("C, depth, R, l, start, L", [(1024, 2, 2, 1, 0, 680), (1024, 2, 2, 4, 1, 680),
                                                      (1024, 2, 2, 16, 14, 680), (1024, 1, 2, 25, 30, 680),
                                                      (1024, 1, 64, 1, 0, 680), (1536, 2, 2, 9, 5, 680),
                                                      (1536, 1, 4, 16, 100, 300), (128, 3, 1, 7, 200, 207),
                                                      (1280, 1, 2, 32, 0, 40)], ids=str)
def test_small_step_kernel(dtype, C, depth, R, l, start, L):
    """The cooperative kernel against `small_step_ref` computed in float32 from the same rounded inputs:
    x after every block, the written keys and values, the untouched rest of the cache; deterministic."""
    assert K.load()
    H, hidden = C // 64, 4 * C
    g = torch.Generator("cuda").manual_seed(C + 10 * depth + R * l + start)

    def rnd(*shape, s=1.0):
        return (torch.randn(*shape, device="cuda", generator=g) * s).to(dtype)

    weights = tuple([f() for _ in range(depth)] for f in (
        lambda: rnd(3 * C, C, s=C ** -0.5), lambda: rnd(3 * C, s=0.2),
        lambda: torch.rand(H, device="cuda", generator=g) * 10 + 1,
        lambda: rnd(C, C, s=C ** -0.5), lambda: rnd(C, s=0.2), lambda: rnd(hidden, C, s=C ** -0.5),
        lambda: rnd(hidden, s=0.2), lambda: rnd(C, hidden, s=hidden ** -0.5), lambda: rnd(C, s=0.2)))
    mods = rnd(depth, R, 6, C, s=0.5)
    kv = rnd(depth, 2, L, R, H, 64)
    # rows with means far from zero: the kernel's LayerNorms must remove them exactly as the reference does
    x = torch.randn(R, l, C, device="cuda", generator=g) * 2 + torch.randn(R, l, 1, device="cuda", generator=g) * 10
    assert K.small_step_fits(R, l, C, H, hidden, depth, L, start, dtype, "cuda")
    xr, kvr = x.cpu(), kv.cpu().float()
    K.small_step_ref(xr, mods.cpu().float(), kvr, *([w.cpu().float() for w in ws] for ws in weights), start, 1e-6)
    before = kv.clone()
    out = x.clone()
    torch.ops.flexvar.small_step(out, mods, kv, *weights, start, 1e-6)
    end = start + l
    assert rel_err(out.cpu(), xr) < 1e-2
    assert rel_err(kv[:, :, start:end].cpu().float(), kvr[:, :, start:end]) < 1e-2
    assert torch.equal(kv[:, :, :start], before[:, :, :start]) and torch.equal(kv[:, :, end:], before[:, :, end:])
    again = x.clone()
    torch.ops.flexvar.small_step(again, mods, before, *weights, start, 1e-6)
    assert torch.equal(again, out) and torch.equal(before, kv)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("B, l, H, d, L, end", [(2, 1, 16, 64, 680, 1), (2, 4, 16, 64, 680, 5), (2, 25, 16, 64, 680, 55),
                                                (2, 256, 16, 64, 680, 680), (64, 169, 16, 64, 680, 424),
                                                (64, 256, 16, 64, 680, 680), (2, 100, 24, 64, 300, 200),
                                                (3, 77, 4, 32, 130, 129), (2, 33, 2, 128, 90, 90), (1, 5, 3, 16, 40, 17)],
                         ids=str)
def test_attention_kernel(dtype, B, l, H, d, L, end):
    """The Triton attention kernel against attend_ref (float32 from the same rounded operands), on the
    fast runtime's views: queries (B, l, H, d), caches (L, B, H, d) of which the first `end` tokens count;
    every default configuration and a few others."""
    from flexvar.kernels.attention import attend, attend_config, attend_ref, kernel_available
    g = torch.Generator("cuda").manual_seed(B * l + end)
    q = torch.nn.functional.normalize(torch.randn(B, l, H, d, device="cuda", generator=g), dim=-1) * 10
    kc = torch.nn.functional.normalize(torch.randn(L, B, H, d, device="cuda", generator=g), dim=-1)
    vc = torch.randn(L, B, H, d, device="cuda", generator=g)
    kc[end:] = float("nan")  # tokens past `end` must not be read into the result
    q, kc, vc = q.to(dtype), kc.to(dtype), vc.to(dtype)
    assert kernel_available(q)
    ref = attend_ref(q, kc, vc, end).float()
    configs = {attend_config(l), (16, 32, 4, 2), (64, 32, 4, 2), (64, 128, 4, 3), (128, 64, 8, 2)}
    for cfg in configs:
        out = attend(q, kc, vc, end, cfg)
        assert out.shape == (B, l, H, d) and out.dtype == dtype and out.is_contiguous()
        assert rel_err(out.float(), ref) < (4e-3 if dtype == torch.float16 else 2e-2), cfg


@pytest.mark.parametrize("attention", ["step", "triton"])
def test_fast_triton_attention_matches_sdpa(models, attention):
    """The fast runtime's fp16 logits with the Triton attention kernels and with SDPA, teacher-forced."""
    from flexvar.bench.precision import fast_teacher_forced
    model, vae = copy.deepcopy(models[0]).half(), copy.deepcopy(models[1]).half()
    sched = Schedule.parse("256-10")
    g = torch.Generator("cuda").manual_seed(1)
    codes = [torch.randint(0, model.cfg.vocab_size, (2, h, w), device="cuda", generator=g) for h, w in sched]
    rt = FastRuntime(model, vae, use_graphs=False, fused_small_steps=False, attention=attention)
    on = fast_teacher_forced(rt, [1, 2], codes, sched)
    off = fast_teacher_forced(FastRuntime(model, vae, use_graphs=False, fused_small_steps=False,
                                          attention="sdpa"), [1, 2], codes, sched)
    assert max(rel_err(x.float(), y.float()) for x, y in zip(on, off)) < 5e-3


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("B, l, H, d, L, start", [(2, 1, 16, 64, 680, 0), (2, 4, 16, 64, 680, 1), (2, 25, 16, 64, 680, 30),
                                                  (2, 256, 16, 64, 680, 424), (64, 169, 16, 64, 680, 255),
                                                  (3, 77, 4, 32, 200, 60), (2, 33, 2, 128, 90, 57), (1, 5, 3, 16, 40, 12),
                                                  (2, 70, 24, 64, 300, 0)], ids=str)
def test_attend_step_kernel(dtype, B, l, H, d, L, start):
    """The fused Triton attention step against attend_step_ref: the output, the step's normalised keys
    and values in the caches, the cache outside [start, start + l) untouched."""
    from flexvar.kernels.attention import attend_config, attend_step, attend_step_ref, step_kernel_available
    g = torch.Generator("cuda").manual_seed(B * l + start)
    qkv = (torch.randn(B, l, 3 * H * d, device="cuda", generator=g) * 3).to(dtype)
    scale = torch.rand(H, 1, device="cuda", generator=g) * 20 + 1
    kc = torch.nn.functional.normalize(torch.randn(L, B, H, d, device="cuda", generator=g), dim=-1).to(dtype)
    vc = torch.randn(L, B, H, d, device="cuda", generator=g).to(dtype)
    kc_ref, vc_ref = kc.clone(), vc.clone()
    ref = attend_step_ref(qkv, scale, kc_ref, vc_ref, start).float()
    assert step_kernel_available(qkv, kc)
    for cfg in {attend_config(l), (16, 32, 4, 2), (64, 32, 4, 2), (64, 128, 4, 3)}:
        k2, v2 = kc.clone(), vc.clone()
        out = attend_step(qkv, scale, k2, v2, start, cfg)
        assert out.shape == (B, l, H, d) and out.dtype == dtype
        assert rel_err(out.float(), ref) < (4e-3 if dtype == torch.float16 else 2e-2), cfg
        assert torch.equal(v2, vc_ref) and torch.equal(k2[:start], kc[:start]) and torch.equal(k2[start + l:], kc[start + l:])
        ulps = (k2[start:start + l].float() - kc_ref[start:start + l].float()).abs().max()
        assert ulps <= (1e-3 if dtype == torch.float16 else 8e-3)  # a rounding step at most


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("B, tokens, H, d, L, start", [(2, 4, 16, 64, 680, 1), (64, 169, 16, 64, 680, 255),
                                                  (3, 77, 4, 32, 200, 60), (2, 256, 16, 64, 680, 424)], ids=str)
def test_attend_step_head_major_cache(dtype, B, tokens, H, d, L, start):
    """`attend_step` on caches stored head-major ((B, H, L, d), passed as (L, B, H, d) views, as
    `KVCache(head_major=True)` gives them): the same bits as on the token-major caches, output and cache writes."""
    from flexvar.kernels.attention import attend_step
    g = torch.Generator("cuda").manual_seed(B + tokens + start)
    qkv = (torch.randn(B, tokens, 3 * H * d, device="cuda", generator=g) * 3).to(dtype)
    scale = torch.rand(H, 1, device="cuda", generator=g) * 20 + 1
    kc = torch.nn.functional.normalize(torch.randn(L, B, H, d, device="cuda", generator=g), dim=-1).to(dtype)
    vc = torch.randn(L, B, H, d, device="cuda", generator=g).to(dtype)
    k_tm, v_tm = kc.clone(), vc.clone()
    k_hm, v_hm = (c.permute(1, 2, 0, 3).contiguous().permute(2, 0, 1, 3) for c in (kc, vc))
    assert k_hm.stride(0) == d
    a = attend_step(qkv, scale, k_tm, v_tm, start)
    b = attend_step(qkv, scale, k_hm, v_hm, start)
    assert torch.equal(a, b) and torch.equal(k_tm, k_hm) and torch.equal(v_tm, v_hm)


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


def test_small_step_in_a_cuda_graph(models):
    """The fast runtime's fp16 steps of <= 32 rows run as small_step inside the captured graph; replay =
    eager, and the per-block path gives the same logits to fp16 accuracy."""
    model, vae = copy.deepcopy(models[0]).half(), copy.deepcopy(models[1]).half()
    sched, p = Schedule.parse("256-10"), SamplingParams(top_k=1, top_p=0.0)
    fused = FastRuntime(model, vae, use_graphs=True, small_step_rows=32)
    kv = torch.zeros(model.cfg.depth, 2, sched.total_tokens, 4, model.cfg.heads, 64, device="cuda", dtype=torch.half)
    assert fused._small_step(torch.zeros(4, 4, model.cfg.width, device="cuda"), kv, 1)  # 16 rows
    assert not fused._small_step(torch.zeros(4, 9, model.cfg.width, device="cuda"), kv, 5)  # 36 > 32 rows
    a = [c.clone() for c in fused.generate([5, 6], sched, p, 11)[0]]
    b = FastRuntime(model, vae, use_graphs=False, small_step_rows=32).generate([5, 6], sched, p, 11)[0]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    from flexvar.bench.precision import fast_teacher_forced
    codes = [c.clone() for c in a]
    on = fast_teacher_forced(FastRuntime(model, vae, use_graphs=False, small_step_rows=32), [5, 6], codes, sched, p)
    off = fast_teacher_forced(FastRuntime(model, vae, use_graphs=False, fused_small_steps=False), [5, 6], codes, sched,
                              p)
    assert max(rel_err(x.float(), y.float()) for x, y in zip(on, off)) < 5e-3


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("R, N, K", [(1, 1024, 1024), (18, 1024, 4096), (32, 1536, 1536), (50, 1536, 6144),
                                     (100, 128, 512), (128, 1024, 1024)], ids=str)
def test_skinny_partials_kernel(dtype, R, N, K):
    from flexvar.kernels.skinny_mm import kernel_available, skinny_partials, skinny_partials_ref, splits_for
    g = torch.Generator("cuda").manual_seed(R)
    x = torch.randn(R, K, device="cuda", generator=g).to(dtype)
    w = (torch.randn(N, K, device="cuda", generator=g) / K ** 0.5).to(dtype)
    splits = splits_for(N, K)
    assert kernel_available(x, w, splits)
    got = skinny_partials(x, w, splits)
    assert got.shape == (splits, R, N)
    assert rel_err(got, skinny_partials_ref(x, w, splits)) < 1e-5


def test_fast_skinny_steps_near_cublas(models):
    """fp16: the split-K projection and fc2 in every per-block step against cuBLAS's, teacher-forced; a graph
    replay with them = eager."""
    from flexvar.bench.precision import fast_teacher_forced
    model, vae = copy.deepcopy(models[0]).half(), copy.deepcopy(models[1]).half()
    sched, p = Schedule.parse("256-10"), SamplingParams()
    g = torch.Generator("cuda").manual_seed(0)
    codes = [torch.randint(0, model.cfg.vocab_size, (2, h, w), device="cuda", generator=g) for h, w in sched]
    on = FastRuntime(model, vae, use_graphs=False, skinny_rows=128)
    off = FastRuntime(model, vae, use_graphs=False, skinny_rows=0)
    a, b = (fast_teacher_forced(rt, [1, 2], codes, sched, p) for rt in (on, off))
    errs = [rel_err(x, y) for x, y in zip(a, b)]
    assert max(errs) < 5e-3, errs
    graph = FastRuntime(model, vae, use_graphs=True, skinny_rows=128)
    x = [c.clone() for c in graph.generate([5, 6], sched, p, 11)[0]]
    y = on.generate([5, 6], sched, p, 11)[0]
    assert all(torch.equal(u, v) for u, v in zip(x, y))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_first_step_table_in_a_cuda_graph(models, dtype):
    """The first-step table (built by the per-block path over chunks of labels) against the first step as the
    runtime computes it without one (`small_step` at 2 rows), inside captured graphs; a replay = eager."""
    model, vae = copy.deepcopy(models[0]).to(dtype), copy.deepcopy(models[1]).to(dtype)
    sched, p = Schedule.parse("256-10"), SamplingParams()
    on = FastRuntime(model, vae, use_graphs=True)
    off = FastRuntime(model, vae, use_graphs=True, first_step_table=False)
    assert on.first_step((1, 1)) is not None and off.first_step((1, 1)) is None
    a = [c.clone() for c in on.generate([5, model.cfg.null_class - 1], sched, p, 11)[0]]
    off.generate([5, model.cfg.null_class - 1], sched, p, 11)
    kv_on, kv_off = (next(iter(rt._plans.values())).cache.kv[:, :, :1].float() for rt in (on, off))
    assert rel_err(kv_on, kv_off) < (5e-3 if dtype == torch.float16 else 2e-2)
    b = FastRuntime(model, vae, use_graphs=False).generate([5, model.cfg.null_class - 1], sched, p, 11)[0]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("guidance", ["ramp", "constant"])
@pytest.mark.parametrize("spec", ["256-10", "512-12", "1x2,2x4,4x8,8x16"], ids=str)
def test_fast_fp32_greedy_identical_to_reference(models, spec, guidance):
    model, vae = models
    pipe = Pipeline(copy.deepcopy(model), copy.deepcopy(vae), device="cuda", dtype=torch.float32)
    assert pipe.use_fast
    kw = dict(cfg=2.5, guidance=guidance, top_k=1, top_p=0.0, seed=0)
    ref = pipe.generate([1, 2, 3], spec, fast=False, **kw)
    out = pipe.generate([1, 2, 3], spec, **kw)
    for si, (a, b) in enumerate(zip(out.codes, ref.codes)):
        assert torch.equal(a, b), f"step {si + 1}: {(a != b).float().mean():.4f} differ"
    assert (out.images.int() - ref.images.int()).abs().max() <= 1


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 5e-3), (torch.bfloat16, 2e-2)], ids=["fp16", "bf16"])
def test_fast_low_precision_logits_near_reference(models, dtype, tol):
    """The fast path in fp16/bf16 (compiled block halves, the attention kernel, the head on the guided input)
    against the float32 reference runtime's guided logits, teacher-forced on the same codes."""
    from flexvar.bench.precision import fast_teacher_forced
    model, vae = models
    sched = Schedule.parse("256-10")
    g = torch.Generator("cuda").manual_seed(0)
    codes = [torch.randint(0, model.cfg.vocab_size, (2, h, w), device="cuda", generator=g) for h, w in sched]
    ref_pipe = Pipeline(copy.deepcopy(model), copy.deepcopy(vae), device="cuda", dtype=torch.float32, fast=False)
    null = model.cfg.null_class
    ref = ref_pipe.teacher_forced_logits([1, 2, null, null], [c.repeat(2, 1, 1) for c in codes], sched)
    p = SamplingParams()
    out = fast_teacher_forced(FastRuntime(copy.deepcopy(model).to(dtype), copy.deepcopy(vae).to(dtype)), [1, 2],
                              codes, sched, p)
    ref = [guide(r, guidance_weight(si, len(sched), hw, p), p.guidance) for si, (r, hw) in enumerate(zip(ref, sched))]
    errs = [rel_err(a.float(), b.float()) for a, b in zip(out, ref)]
    assert max(errs) < tol, errs


def test_graph_replay_equals_eager_bf16(models):
    model, vae = copy.deepcopy(models[0]).bfloat16(), copy.deepcopy(models[1]).bfloat16()
    sched, p = Schedule.parse("256-10"), SamplingParams()
    g = FastRuntime(model, vae, use_graphs=True)
    e = FastRuntime(model, vae, use_graphs=False)
    a = [c.clone() for c in g.generate([5, 6], sched, p, 11)[0]]
    a_img = g._plans[next(iter(g._plans))].image.clone()
    b, b_img = e.generate([5, 6], sched, p, 11)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert torch.equal(a_img, b_img)
    again = g.generate([5, 6], sched, p, 11)[0]  # replay is reproducible
    assert all(torch.equal(x, y) for x, y in zip(a, again))


def test_head_major_kv_cache_same_generation_fp16(models):
    """`kv_head_major_min_batch`: batch 8 with the cache head-major, in CUDA graphs, gives the same codes and images
    bit for bit as the token-major cache (the same kernels; only `attend_step`'s addresses differ)."""
    model, vae = copy.deepcopy(models[0]).half(), copy.deepcopy(models[1]).half()
    sched, p, labels = Schedule.parse("256-10"), SamplingParams(), list(range(8))
    a = FastRuntime(model, vae)
    b = FastRuntime(model, vae, kv_head_major_min_batch=8)
    a_codes, a_img = a.generate(labels, sched, p, 4)  # two runtimes: neither overwrites the other's plan buffers
    b_codes, b_img = b.generate(labels, sched, p, 4)
    assert next(iter(b._plans.values())).cache.head_major
    assert all(torch.equal(x, y) for x, y in zip(a_codes, b_codes)) and torch.equal(a_img, b_img)


def test_inpaint_with_cuda_graphs_equals_reference(models):
    """Forced codes as plan buffers of a captured graph: greedy in-painting equals the reference runtime."""
    from flexvar import editing
    model, vae = models
    fast = Pipeline(copy.deepcopy(model), copy.deepcopy(vae), device="cuda", dtype=torch.float32)
    ref = Pipeline(copy.deepcopy(model), copy.deepcopy(vae), device="cuda", dtype=torch.float32, fast=False)
    img = smooth_image(256, 256, seed=1)
    mask = torch.zeros(256, 256, dtype=torch.bool)
    mask[64:192, 80:200] = True
    kw = dict(top_k=1, top_p=0.0, seed=0)
    for _ in range(2):  # the second call replays the captured graph with refilled buffers
        a = editing.inpaint(fast, img, mask, [5, 6], "256-10", **kw)
    b = editing.inpaint(ref, img, mask, [5, 6], "256-10", **kw)
    assert fast.fast_runtime._plans and next(iter(fast.fast_runtime._plans.values())).graph is not None
    for si, (x, y) in enumerate(zip(a.codes, b.codes)):
        assert torch.equal(x, y), f"step {si + 1}"


# ---- cuBLASLt GEMMs with tuned algorithms (flexvar.kernels.lt_linear) --------------------------------------
def _lt_operands(M, N, K, dtype, seed):
    g = torch.Generator("cuda").manual_seed(seed)
    x = torch.randn(M, K, device="cuda", generator=g).to(dtype)
    w = (torch.randn(N, K, device="cuda", generator=g) / K ** 0.5).to(dtype)
    return x, w, torch.randn(N, device="cuda", generator=g).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("M, N, K, gelu", [(18, 3072, 1024, False), (200, 1024, 1024, False), (338, 4096, 1024, True),
                                           (512, 1024, 4096, False), (50, 6144, 1536, True), (338, 4608, 1536, False),
                                           (512, 1536, 6144, False), (16384, 4096, 1024, True), (7, 64, 32, False)],
                         ids=str)
def test_lt_linear_every_candidate(dtype, M, N, K, gelu):
    """Every algorithm the heuristic offers for the shape against the float32 definition; deterministic."""
    from flexvar.kernels import lt_linear as lt
    assert lt.available(torch.device("cuda"), dtype)
    x, w, b = _lt_operands(M, N, K, dtype, M + N + K)
    epi = int(gelu)
    ref = lt.lt_linear_ref(x.float(), w.float(), b.float(), gelu)
    n = torch.ops.flexvar.lt_select(x, w, b, epi, -1)
    assert n >= 1
    before = lt._state["chosen"].get((0, M, N, K, str(dtype), gelu), 0)
    try:
        for i in range(n):
            torch.ops.flexvar.lt_select(x, w, b, epi, i)
            poison = torch.full((M, N), float("nan"), device="cuda", dtype=dtype)
            del poison  # the allocator hands this block to the op's output: unwritten elements stay NaN
            y = torch.ops.flexvar.lt_linear(x, w, b, epi)
            assert y.shape == (M, N) and y.dtype == dtype and torch.isfinite(y).all(), i
            assert rel_err(y.float(), ref) < (5e-3 if dtype == torch.float16 else 2e-2), i
            assert torch.equal(y, torch.ops.flexvar.lt_linear(x, w, b, epi)), i
    finally:
        torch.ops.flexvar.lt_select(x, w, b, epi, before)


def test_lt_linear_other_operands_run_aten():
    """float32, a misaligned view, or a transposed weight: no candidates, and ATen's result."""
    x, w, b = _lt_operands(64, 256, 128, torch.float16, 1)
    xf, wf, bf = x.float(), w.float(), b.float()
    assert torch.ops.flexvar.lt_select(xf, wf, bf, 0, -1) == 0
    assert torch.equal(torch.ops.flexvar.lt_linear(xf, wf, bf, 0), torch.addmm(bf, xf, wf.t()))
    xm = torch.randn(64 * 128 + 1, device="cuda").half()[1:].view(64, 128)  # 2 bytes off 16-byte alignment
    assert torch.ops.flexvar.lt_select(xm, w, b, 1, -1) == 0
    assert torch.equal(torch.ops.flexvar.lt_linear(xm, w, b, 1), torch._addmm_activation(b, xm, w.t(), use_gelu=True))
    wt = torch.randn(128, 256, device="cuda").half().t()
    assert torch.equal(torch.ops.flexvar.lt_linear(x, wt, b, 0), torch.addmm(b, x, wt.t()))


def test_lt_tune_saves_choices_and_replays_in_a_graph(tmp_path, monkeypatch):
    """`tune` times every candidate, keeps the first unless another is 3 % faster, saves the choice (a new process
    takes it untimed); lt_linear in a CUDA graph replays what it computes eagerly."""
    from flexvar.kernels import lt_linear as lt
    monkeypatch.setenv("FLEXVAR_KERNELS_CACHE", str(tmp_path))
    monkeypatch.setitem(lt._state, "saved", None)
    monkeypatch.setitem(lt._state, "chosen", {})
    shapes = [(200, 1024, 1024, False), (338, 4096, 1024, True)]
    done = lt.tune(shapes, torch.float16, "cuda")
    assert set(done) == set(shapes)
    for index, n, times in done.values():
        assert n >= 1 and 0 <= index < n and len(times) == n and all(t > 0 for t in times)
        assert index == lt.choose(times, 0.03)  # the fastest, where it beats the first by 3 %
    saved = json.loads((tmp_path / "lt_algos.json").read_text())
    (machine, choices), = saved.items()
    assert choices == {f"{m},{n},{k},float16,{int(g)}": done[(m, n, k, g)][0] for m, n, k, g in shapes}
    assert lt.tune(shapes, torch.float16, "cuda") == {}  # chosen in this process already
    monkeypatch.setitem(lt._state, "saved", None)
    monkeypatch.setitem(lt._state, "chosen", {})
    again = lt.tune(shapes, torch.float16, "cuda")
    assert {s: v[0] for s, v in again.items()} == {s: v[0] for s, v in done.items()} and all(
        v[2] is None for v in again.values())  # read, not timed
    x, w, b = _lt_operands(338, 4096, 1024, torch.float16, 5)
    eager = torch.ops.flexvar.lt_linear(x, w, b, 1)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = torch.ops.flexvar.lt_linear(x, w, b, 1)
    graph.replay()
    assert torch.equal(y, eager)


def test_fast_lt_gemms_near_aten(models):
    """fp16: the runtime's block GEMMs through lt_linear with the *last* candidate of every shape (the furthest from
    what F.linear runs) against F.linear's, teacher-forced; then tuned, a graph replay = eager."""
    from flexvar.bench.precision import fast_teacher_forced
    from flexvar.kernels import lt_linear as lt
    model, vae = copy.deepcopy(models[0]).half(), copy.deepcopy(models[1]).half()
    sched, p = Schedule.parse("256-10"), SamplingParams()
    g = torch.Generator("cuda").manual_seed(0)
    codes = [torch.randint(0, model.cfg.vocab_size, (2, h, w), device="cuda", generator=g) for h, w in sched]
    on = FastRuntime(model, vae, use_graphs=False)
    off = FastRuntime(model, vae, use_graphs=False, lt_gemms=False)
    assert on.lt_gemms and not off.lt_gemms
    C = model.cfg.width
    forced = []
    for rows, n_out, n_in, gelu in on.gemm_shapes(sched, 2, first_from_table=True):
        x, w, b = _lt_operands(rows, n_out, n_in, torch.float16, 0)
        n = torch.ops.flexvar.lt_select(x, w, b, int(gelu), -1)
        forced.append(n)
        torch.ops.flexvar.lt_select(x, w, b, int(gelu), n - 1)
    assert max(forced) > 1, forced  # some shape has another algorithm to try
    try:
        a, b = (fast_teacher_forced(rt, [1, 2], codes, sched, p) for rt in (on, off))
    finally:
        for rows, n_out, n_in, gelu in on.gemm_shapes(sched, 2, first_from_table=True):  # this process's choices
            x, w, bias = _lt_operands(rows, n_out, n_in, torch.float16, 0)
            index = lt._state["chosen"].get((0, rows, n_out, n_in, "torch.float16", gelu), 0)
            torch.ops.flexvar.lt_select(x, w, bias, int(gelu), index)
    errs = [rel_err(x, y) for x, y in zip(a, b)]
    assert max(errs) < 5e-3, (errs, C)
    graph = FastRuntime(model, vae, use_graphs=True)
    x = [c.clone() for c in graph.generate([5, 6], sched, p, 11)[0]]
    y = on.generate([5, 6], sched, p, 11)[0]
    assert all(torch.equal(u, v) for u, v in zip(x, y))
