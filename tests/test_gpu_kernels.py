"""GPU checks of the transformer side's kernels (marked gpu; skipped without CUDA), each against its plain-PyTorch
reference: token preparation, sampling, q/k norms and the cache write, `small_step`, the attention kernels (both
cache layouts), the split-K and the tuned cuBLASLt GEMMs (alone and in the runtime)."""
import copy
import json

import pytest
import torch

import flexvar.kernels as K
from flexvar.fast import FastRuntime, bicubic_taps
from flexvar.kv_cache import head_major_copy
from flexvar.sampling import SamplingParams, guide
from flexvar.schedule import Schedule

from conftest import rel_err

pytestmark = pytest.mark.gpu


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
        k3, v3 = kc.clone(), vc.clone()  # write_cache=False (a last step): the same bits, the caches untouched
        assert torch.equal(attend_step(qkv, scale, k3, v3, start, cfg, write_cache=False), out)
        assert torch.equal(k3, kc) and torch.equal(v3, vc)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("B, tokens, H, d, L, start", [(2, 4, 16, 64, 680, 1), (64, 169, 16, 64, 680, 255),
                                                  (3, 77, 4, 32, 200, 60), (2, 256, 16, 64, 680, 424)], ids=str)
def test_attend_step_head_major_cache(dtype, B, tokens, H, d, L, start):
    """`attend_step` on caches stored head-major ((B, H, L, d), passed as (L, B, H, d) views, as
    `KVCache(head_major=True)` and `head_major_copy` give them): the same bits as on the token-major caches, output
    and cache writes."""
    from flexvar.kernels.attention import attend_step
    g = torch.Generator("cuda").manual_seed(B + tokens + start)
    qkv = (torch.randn(B, tokens, 3 * H * d, device="cuda", generator=g) * 3).to(dtype)
    scale = torch.rand(H, 1, device="cuda", generator=g) * 20 + 1
    kc = torch.nn.functional.normalize(torch.randn(L, B, H, d, device="cuda", generator=g), dim=-1).to(dtype)
    vc = torch.randn(L, B, H, d, device="cuda", generator=g).to(dtype)
    k_tm, v_tm = kc.clone(), vc.clone()
    k_hm, v_hm = (head_major_copy(c) for c in (kc, vc))
    assert k_hm.stride(0) == d
    a = attend_step(qkv, scale, k_tm, v_tm, start)
    b = attend_step(qkv, scale, k_hm, v_hm, start)
    assert torch.equal(a, b) and torch.equal(k_tm, k_hm) and torch.equal(v_tm, v_hm)


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
