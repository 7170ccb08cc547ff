"""pytest-benchmark suite for the kernels and their references, side by side on one device.

    python -m pytest bench/bench_kernels.py --benchmark-only [--benchmark-json OUT.json]

On CUDA each op is timed as the fused kernel and as its PyTorch `_ref`; on CPU only the references
run (the kernels are CUDA-only; the Triton ones also need Triton). Shapes are d16's (C = 1024,
V = 8912) at the last 256 px step (`skinny_partials`: fc2 at batch 1's step 4, 32 rows), and the tokenizer
decoder's largest GroupNorm (128 channels at 256 x 256).
"""
import pytest
import torch

import flexvar.kernels as K
from flexvar.fast import bicubic_taps
from flexvar.kernels import attention, group_norm, skinny_mm

DEV = "cuda" if torch.cuda.is_available() else "cpu"
DT = torch.bfloat16 if DEV == "cuda" else torch.float32


def _sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def _timed(benchmark, fn):
    """Time fn() with a device synchronize after each call."""
    def run():
        fn()
        _sync()
    benchmark(run)


@pytest.fixture(scope="module", params=[1, 32], ids=lambda b: f"B{b}")
def tokens_case(request):
    B, C, V, src, dst = request.param * 2, 1024, 8912, (13, 13), (16, 16)
    g = torch.Generator(DEV).manual_seed(0)
    proj = torch.randn(V, C, device=DEV, generator=g).to(DT)
    bias = torch.randn(C, device=DEV, generator=g).to(DT)
    pos = torch.randn(dst[0] * dst[1], C, device=DEV, generator=g).to(DT)
    prev = torch.randint(0, V, (B, *src), device=DEV, generator=g)
    (ry, wy), (rx, wx) = bicubic_taps(src[0], dst[0]), bicubic_taps(src[1], dst[1])
    taps = tuple(t.to(DEV) for t in (ry.int(), wy, rx.int(), wx))
    return prev, proj, bias, pos, dst, taps


def test_next_tokens_ref(benchmark, tokens_case):
    prev, proj, bias, pos, dst, _ = tokens_case

    _timed(benchmark, lambda: K.next_tokens_ref(prev, proj, bias, pos, dst))


@pytest.mark.skipif(DEV != "cuda", reason="the kernel is CUDA-only")
def test_next_tokens_kernel(benchmark, tokens_case):
    prev, proj, bias, pos, dst, taps = tokens_case
    assert K.load()

    _timed(benchmark, lambda: torch.ops.flexvar.next_tokens(prev, proj, bias, pos, *taps))


@pytest.fixture(scope="module", params=[1, 32], ids=lambda b: f"B{b}")
def logits_case(request):
    """Both halves of the last 256 px step's logits (guidance), top-k 900, top-p 0.95."""
    B = request.param
    g = torch.Generator(DEV).manual_seed(1)
    return torch.randn(2 * B, 256, 8912, device=DEV, generator=g), torch.tensor([3], device=DEV)


def test_guided_sample_ref(benchmark, logits_case):
    logits, seed = logits_case

    _timed(benchmark, lambda: K.guided_sample_ref(logits, seed, 2.5, 0, 900, 0.95, 9))


@pytest.mark.skipif(DEV != "cuda", reason="the kernel is CUDA-only")
def test_guided_sample_kernel(benchmark, logits_case):
    logits, seed = logits_case
    assert K.load()

    _timed(benchmark, lambda: torch.ops.flexvar.guided_sample(logits, seed, 2.5, 0, 900, 0.95, 9))


@pytest.fixture(scope="module", params=[1, 32], ids=lambda b: f"B{b}")
def qkv_case(request):
    """The last 256 px step of a d16 block (H 16, d 64): qkv (2B, 256, 3072), caches for 680 tokens."""
    B, l, H, d, L = request.param * 2, 256, 16, 64, 680
    g = torch.Generator(DEV).manual_seed(2)
    qkv = torch.randn(B, l, 3 * H * d, device=DEV, generator=g).to(DT)
    scale = torch.rand(H, device=DEV, generator=g) + 1
    kc, vc = (torch.randn(L, B, H, d, device=DEV, generator=g).to(DT) for _ in range(2))
    return qkv, scale, kc, vc, L - l


def test_qk_norm_cache_ref(benchmark, qkv_case):
    qkv, scale, kc, vc, start = qkv_case

    _timed(benchmark, lambda: K.qk_norm_cache_ref(qkv, scale, kc, vc, start))


@pytest.mark.skipif(DEV != "cuda", reason="the kernel is CUDA-only")
def test_qk_norm_cache_kernel(benchmark, qkv_case):
    qkv, scale, kc, vc, start = qkv_case
    assert K.load()

    _timed(benchmark, lambda: torch.ops.flexvar.qk_norm_cache(qkv, scale, kc, vc, start))


@pytest.fixture(scope="module", params=[(2, 1, 0), (2, 16, 14)], ids=lambda p: f"rows{p[0] * p[1]}")
def step_case(request):
    """small_step on 4 d16 blocks (C 1024, H 16, hidden 4096): batch 1's first step (2 rows) and its
    fourth (16 tokens at offset 14: 32 rows). The kernel's own per-phase timing: bench/gpu/small_step_probe.cu."""
    R, l, start = request.param
    depth, C, H, hidden, L = 4, 1024, 16, 4096, 680
    g = torch.Generator(DEV).manual_seed(3)

    def rnd(*shape, s=1.0):
        return (torch.randn(*shape, device=DEV, generator=g) * s).to(DT)

    weights = tuple([f() for _ in range(depth)] for f in (
        lambda: rnd(3 * C, C, s=C ** -0.5), lambda: rnd(3 * C, s=0.1), lambda: torch.rand(H, device=DEV) + 3,
        lambda: rnd(C, C, s=C ** -0.5), lambda: rnd(C, s=0.1), lambda: rnd(hidden, C, s=C ** -0.5),
        lambda: rnd(hidden, s=0.1), lambda: rnd(C, hidden, s=hidden ** -0.5), lambda: rnd(C, s=0.1)))
    mods = rnd(depth, R, 6, C, s=0.3)
    kv = rnd(depth, 2, L, R, H, 64)
    x = torch.randn(R, l, C, device=DEV, generator=g)
    return x, mods, kv, weights, start


def test_small_step_ref(benchmark, step_case):
    x, mods, kv, weights, start = step_case

    _timed(benchmark, lambda: K.small_step_ref(x.clone(), mods, kv, *weights, start, 1e-6))


@pytest.mark.skipif(DEV != "cuda", reason="the kernel is CUDA-only")
def test_small_step_kernel(benchmark, step_case):
    x, mods, kv, weights, start = step_case
    assert K.load()

    _timed(benchmark, lambda: torch.ops.flexvar.small_step(x.clone(), mods, kv, *weights, start, 1e-6))


def test_attend_step_ref(benchmark, qkv_case):
    qkv, scale, kc, vc, start = qkv_case
    _timed(benchmark, lambda: attention.attend_step_ref(qkv, scale, kc, vc, start))


@pytest.mark.skipif(DEV != "cuda" or attention.triton is None, reason="the kernel is a CUDA Triton kernel")
def test_attend_step_kernel(benchmark, qkv_case):
    qkv, scale, kc, vc, start = qkv_case
    assert attention.step_kernel_available(qkv, kc)
    _timed(benchmark, lambda: attention.attend_step(qkv, scale, kc, vc, start))


@pytest.fixture(scope="module", params=[1, 8], ids=lambda b: f"B{b}")
def norm_case(request):
    """The decoder's last-level GroupNorm + SiLU: (B, 128, 256, 256) channels-last."""
    g = torch.Generator(DEV).manual_seed(4)
    x = torch.randn(request.param, 128, 256, 256, device=DEV, generator=g).to(DT)
    w, b = (torch.randn(128, device=DEV, generator=g).to(DT) for _ in range(2))
    return x.contiguous(memory_format=torch.channels_last), w, b


def test_group_norm_silu_ref(benchmark, norm_case):
    x, w, b = norm_case
    _timed(benchmark, lambda: group_norm.group_norm_silu_ref(x, w, b, 32, 1e-6, True))


@pytest.mark.skipif(DEV != "cuda" or group_norm.triton is None, reason="the kernels are CUDA Triton kernels")
def test_group_norm_silu_kernel(benchmark, norm_case):
    x, w, b = norm_case
    assert group_norm.kernel_available(x, 32)
    _timed(benchmark, lambda: group_norm.group_norm_silu(x, w, b, 32, 1e-6, True))


def test_add_group_norm_silu_ref(benchmark, norm_case):
    """The residual form with a convolution's bias: s = x + (x + b), then GroupNorm + SiLU of s."""
    x, w, b = norm_case
    _timed(benchmark, lambda: group_norm.add_group_norm_silu_ref(x, x, w, b, 32, 1e-6, True, b))


@pytest.mark.skipif(DEV != "cuda" or group_norm.triton is None, reason="the kernels are CUDA Triton kernels")
def test_add_group_norm_silu_kernel(benchmark, norm_case):
    x, w, b = norm_case
    assert group_norm.kernel_available(x, 32)
    _timed(benchmark, lambda: group_norm.add_group_norm_silu(x, x, w, b, 32, 1e-6, True, b))


def _conv_out(x):
    """conv_out's filters (3 output channels) laid out for `group_norm_silu_taps`, and its bias."""
    g = torch.Generator(DEV).manual_seed(4)
    w = (torch.randn(3, x.shape[1], 3, 3, device=DEV, generator=g) * x.shape[1] ** -0.5).to(x.dtype)
    return group_norm.conv_taps(w), torch.randn(3, device=DEV, generator=g).to(x.dtype)


def test_group_norm_silu_taps_ref(benchmark, norm_case):
    """The decoder's end (GroupNorm + SiLU, then conv_out's partial products, summed by `conv_from_taps`)."""
    x, w, b = norm_case
    taps, cb = _conv_out(x)
    _timed(benchmark, lambda: group_norm.conv_from_taps(
        group_norm.group_norm_silu_taps_ref(x, w, b, 32, 1e-6, taps, None, x), cb, x.dtype))


@pytest.mark.skipif(DEV != "cuda" or group_norm.triton is None, reason="the kernels are CUDA Triton kernels")
def test_group_norm_silu_taps_kernel(benchmark, norm_case):
    x, w, b = norm_case
    taps, cb = _conv_out(x)
    assert group_norm.kernel_available(x, 32)
    _timed(benchmark, lambda: group_norm.conv_from_taps(
        group_norm.group_norm_silu_taps(x, w, b, 32, 1e-6, taps, None, x), cb, x.dtype))


@pytest.fixture(scope="module")
def fc2_case():
    """d16's fc2 at batch 1's step 4: h (32, 4096) against the (1024, 4096) weight, 8 K splits."""
    g = torch.Generator(DEV).manual_seed(5)
    h = torch.randn(32, 4096, device=DEV, generator=g).to(DT)
    w = (torch.randn(1024, 4096, device=DEV, generator=g) / 64).to(DT)
    return h, w, skinny_mm.splits_for(1024, 4096)


def test_skinny_partials_ref(benchmark, fc2_case):
    h, w, splits = fc2_case
    _timed(benchmark, lambda: skinny_mm.skinny_partials_ref(h, w, splits))


@pytest.mark.skipif(DEV != "cuda" or skinny_mm.triton is None, reason="the kernel is a CUDA Triton kernel")
def test_skinny_partials_kernel(benchmark, fc2_case):
    h, w, splits = fc2_case
    assert skinny_mm.kernel_available(h, w, splits)
    _timed(benchmark, lambda: skinny_mm.skinny_partials(h, w, splits))
