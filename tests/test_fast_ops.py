"""The fast runtime's ops (`flexvar.kernels`: their CPU definitions, which the CUDA/Triton kernels are checked
against on the GPU) against the model's own computation: next-step tokens, the attention prologue and attention,
sampling, split-K partials, `small_step`."""
import copy

import pytest
import torch
import torch.nn.functional as F

import flexvar.kernels as K
from flexvar.fast import FastRuntime, bicubic_taps
from flexvar.kernels import guided_sample_ref, hashed_uniform, kept_mass_ref
from flexvar.sampling import filter_top_k_top_p_, guide

from conftest import rel_err

SHAPES = [((1, 1), (2, 2)), ((2, 2), (3, 3)), ((8, 8), (10, 10)), ((13, 13), (16, 16)), ((16, 16), (23, 23)),
          ((23, 23), (32, 32)), ((2, 3), (4, 7)), ((5, 5), (5, 5)), ((9, 4), (4, 9)), ((16, 32), (40, 64))]


@pytest.mark.parametrize("src, dst", SHAPES, ids=str)
def test_bicubic_taps_match_pytorch(src, dst):
    g = torch.Generator().manual_seed(src[0] * 100 + dst[1])
    x = torch.randn(2, 5, *src, generator=g)
    (ry, wy), (rx, wx) = bicubic_taps(src[0], dst[0]), bicubic_taps(src[1], dst[1])
    taps = x[:, :, ry[:, :, None, None], rx[None, None, :, :]]  # (B, C, h, 4, w, 4)
    ours = (taps * (wy[:, :, None, None] * wx[None, None])).sum((3, 5))
    ref = F.interpolate(x, size=dst, mode="bicubic", align_corners=False)
    assert rel_err(ours, ref) < 1e-6


@pytest.mark.parametrize("src, dst", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_next_tokens_op_definition_matches_ref_and_model(pipe_test, src, dst, dtype):
    m, vae = pipe_test.model, pipe_test.vae
    rt = FastRuntime(m, vae, use_graphs=False)
    g = torch.Generator().manual_seed(sum(src) + sum(dst))
    prev = torch.randint(0, m.cfg.vocab_size, (3, *src), generator=g)
    pos = m.positions(*dst)
    (ry, wy), (rx, wx) = bicubic_taps(src[0], dst[0]), bicubic_taps(src[1], dst[1])
    proj, bias = rt.proj_VC.to(dtype), m.word_embed.bias.to(dtype)
    op = torch.ops.flexvar.next_tokens(prev, proj, bias, pos.to(dtype), ry.int(), wy, rx.int(), wx)
    ref = K.next_tokens_ref(prev, proj, bias, pos.to(dtype), dst)
    model_ref = m.next_tokens(vae.quantize.lookup(prev), *dst)  # lookup -> bicubic -> word_embed -> + pos
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert op.dtype == dtype and op.shape == (3, dst[0] * dst[1], m.cfg.width)
    assert rel_err(op, ref) < tol and rel_err(op, model_ref) < tol


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_qk_norm_cache_op_is_the_blocks_attention_prologue(pipe_test, dtype):
    """The op (its CPU definition) = the reference block's q/k normalisation and q scale
    (`SelfAttention.qkv`), with k and v written at [start, start + l) of the token-major caches."""
    blk, cfg = pipe_test.model.blocks[1], pipe_test.model.cfg
    x = torch.randn(2, 7, cfg.width, generator=torch.Generator().manual_seed(1))
    wqkv, bqkv, scale = FastRuntime._weights(blk)[:3]
    caches = [torch.randn(12, 2, cfg.heads, cfg.head_dim).to(dtype) for _ in range(2)]
    before = [c.clone() for c in caches]
    q = torch.ops.flexvar.qk_norm_cache(F.linear(x, wqkv, bqkv).to(dtype), scale, *caches, 3)
    q_ref, k_ref, v_ref = blk.attn.qkv(x)  # (B, H, l, d), (B, l, H, d), (B, l, H, d)
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    assert q.shape == (2, 7, cfg.heads, cfg.head_dim) and q.dtype == dtype
    assert rel_err(q.float(), q_ref.transpose(1, 2)) < tol
    assert rel_err(caches[0][3:10].float(), k_ref.transpose(0, 1)) < tol
    assert rel_err(caches[1][3:10].float(), v_ref.transpose(0, 1)) < tol
    for c, b in zip(caches, before):  # nothing outside [3, 10) is touched
        assert torch.equal(c[:3], b[:3]) and torch.equal(c[10:], b[10:])


def test_hashed_uniform():
    s = torch.tensor([7])
    a, b = hashed_uniform(s, 3, 100000), hashed_uniform(s, 3, 100000)
    assert torch.equal(a, b) and a.min() >= 0 and a.max() < 1
    assert abs(a.mean().item() - 0.5) < 0.01 and abs(a.var().item() - 1 / 12) < 0.005
    assert not torch.equal(a, hashed_uniform(s, 4, 100000))
    assert not torch.equal(a, hashed_uniform(torch.tensor([8]), 3, 100000))
    assert (a[1:] != a[:-1]).float().mean() > 0.99


@pytest.mark.parametrize("V, top_k, top_p", [(300, 0, 0.5), (300, 17, 0.0), (300, 40, 0.9), (4096, 900, 0.95),
                                            (64, 64, 0.3), (64, 200, 0.99)])
def test_kept_mass_follows_the_release_filter(V, top_k, top_p):
    g = torch.Generator().manual_seed(V + top_k)
    logits = torch.randn(3, 5, V, generator=g) * 3
    kept = kept_mass_ref(logits, top_k, top_p)
    release = filter_top_k_top_p_(logits.clone(), top_k, top_p)
    assert torch.equal(kept > 0, torch.isfinite(release))
    assert rel_err(kept / kept.sum(-1, keepdim=True), release.softmax(-1)) < 1e-6


@pytest.mark.parametrize("rule", ["ramp", "constant"])
@pytest.mark.parametrize("top_k, top_p", [(0, 0.0), (1, 0.0), (4, 0.0), (0, 0.6), (6, 0.8), (900, 0.95)])
def test_guided_sample_distribution(top_k, top_p, rule):
    """Draws over many tokens of one guided distribution follow the release's filtered probabilities."""
    g = torch.Generator().manual_seed(top_k + int(100 * top_p))
    both = torch.randn(2, 1, 12, generator=g) * 1.5
    t = 0.7
    guided = guide(both, t, rule)
    probs = filter_top_k_top_p_(guided.clone(), top_k, top_p).softmax(-1)[0, 0]
    n = 40000
    draws = guided_sample_ref(both.expand(2, n, 12).contiguous(), torch.tensor([top_k]), t, K.RULE_CODES[rule],
                              top_k, top_p, step=2)[0]
    freq = torch.bincount(draws, minlength=12).float() / n
    assert (freq[probs == 0] == 0).all()  # never outside the kept set
    assert (freq - probs).abs().max() < 0.015
    if top_k == 1:
        assert (draws == guided.argmax(-1)).all()


def test_guided_sample_op_is_its_reference_and_seeded():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(4, 9, 500, generator=g)
    seed = torch.tensor([11])
    op = torch.ops.flexvar.guided_sample(logits, seed, 1.5, 0, 50, 0.9, 3)
    assert torch.equal(op, guided_sample_ref(logits, seed, 1.5, 0, 50, 0.9, 3)) and op.shape == (2, 9)
    assert not torch.equal(op, guided_sample_ref(logits, torch.tensor([12]), 1.5, 0, 50, 0.9, 3))
    kept = kept_mass_ref(guide(logits, 1.5, "ramp"), 50, 0.9)
    assert (kept.gather(-1, op[..., None]) > 0).all()


@pytest.mark.parametrize("R, N, K, splits", [(1, 64, 128, 1), (18, 128, 512, 4), (33, 192, 256, 2), (128, 64, 384, 3)])
def test_skinny_partials_sum_to_the_product(R, N, K, splits):
    from flexvar.kernels.skinny_mm import skinny_partials
    g = torch.Generator().manual_seed(R)
    x, w = torch.randn(R, K, generator=g), torch.randn(N, K, generator=g)
    p = skinny_partials(x, w, splits)
    assert p.shape == (splits, R, N) and p.dtype == torch.float32
    assert rel_err(p.sum(0), x @ w.t()) < 1e-5
    k = K // splits  # each partial is its own K range
    assert rel_err(p[-1], x[:, -k:] @ w[:, -k:].t()) < 1e-5


def test_skinny_splits_by_shape():
    """The fewest K splits giving >= 128 programs of 64 columns (what the H100 probe found fastest)."""
    from flexvar.kernels.skinny_mm import splits_for
    assert [splits_for(1024, 1024), splits_for(1024, 4096), splits_for(1536, 1536), splits_for(1536, 6144)] == [8, 8, 6, 6]
    assert splits_for(128, 512) == 4 and splits_for(64, 64) == 0 and splits_for(96, 1024) == 0


def test_guided_sample_none_samples_guided_logits():
    """Rule "none" on logits guided beforehand draws the same codes as the ramp / constant rules on both halves
    (the same uniforms, the same float32 guidance arithmetic); a bias is added to every row first."""
    g = torch.Generator().manual_seed(6)
    both = torch.randn(6, 7, 300, generator=g) * 2
    bias = torch.randn(300, generator=g) * 3
    seed = torch.tensor([99])
    for rule in ("ramp", "constant"):
        for top_k, top_p in [(50, 0.9), (1, 0.0), (0, 0.0)]:
            want = torch.ops.flexvar.guided_sample(both, seed, 1.3, K.RULE_CODES[rule], top_k, top_p, 5)
            got = torch.ops.flexvar.guided_sample(guide(both, 1.3, rule), seed, 0.0, K.RULE_CODES["none"], top_k,
                                                  top_p, 5)
            assert got.shape == (3, 7) and torch.equal(got, want), (rule, top_k, top_p)
            with_bias = torch.ops.flexvar.guided_sample(both - bias, seed, 1.3, K.RULE_CODES[rule], top_k, top_p, 5,
                                                        bias)
            unbiased = torch.ops.flexvar.guided_sample((both - bias) + bias, seed, 1.3, K.RULE_CODES[rule], top_k,
                                                       top_p, 5)
            assert torch.equal(with_bias, unbiased), (rule, top_k, top_p)
    assert not torch.equal(torch.ops.flexvar.guided_sample(both, seed, 0.0, 2, 0, 0.0, 5, bias),
                           torch.ops.flexvar.guided_sample(both, seed, 0.0, 2, 0, 0.0, 5))
    half = bias.half()  # the wrapper passes the bias on (as float32, which the CUDA op requires)
    assert torch.equal(K.guided_sample(both, seed, 0.0, "none", 50, 0.9, 5, bias_V=half),
                       torch.ops.flexvar.guided_sample(both, seed, 0.0, 2, 50, 0.9, 5, half.float()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_small_step_op_is_the_blocks_forward_step(pipe_test, dtype):
    """The op (its CPU definition) = `Block.forward_step` of every block on a step's rows, with k and v
    written at [start, start + l) of each layer's cache and nothing else touched; x updated in place."""
    m, cfg = pipe_test.model, pipe_test.model.cfg
    g = torch.Generator().manual_seed(5)
    R, l, start, L = 4, 6, 5, 14
    x = torch.randn(R, l, cfg.width, generator=g)
    labels = torch.tensor([1, 2, cfg.null_class, cfg.null_class])
    _, blocks, _ = m.modulation(labels)
    from flexvar.kv_cache import KVCache
    ref_cache = KVCache(cfg.depth, L, R, cfg.heads, cfg.head_dim)
    ref_cache.kv.copy_(torch.randn(ref_cache.kv.shape, generator=g))
    kv = ref_cache.kv.to(dtype)
    before = kv.clone()
    y = x
    for i, blk in enumerate(m.blocks):
        y = blk.forward_step(y, blocks[i], ref_cache, i, start)
    rt = FastRuntime(copy.deepcopy(m).to(dtype), pipe_test.vae, use_graphs=False)
    out = x.clone()
    torch.ops.flexvar.small_step(out, blocks.to(dtype), kv, *rt.step_weights, start, cfg.norm_eps)
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    assert rel_err(out, y) < tol
    assert rel_err(kv[:, :, start:start + l].float(), ref_cache.kv[:, :, start:start + l]) < tol
    assert torch.equal(kv[:, :, :start], before[:, :, :start]) and torch.equal(kv[:, :, start + l:], before[:, :, start + l:])


def test_small_step_fits_only_cuda_low_precision():
    """Where the kernel cannot run (CPU, float32, head dim != 64, too many rows) the runtime keeps the per-block path."""
    assert not K.small_step_fits(2, 1, 1024, 16, 4096, 16, 680, 0, torch.float16, "cpu")
    assert not K.small_step_fits(2, 1, 1024, 16, 4096, 16, 680, 0, torch.float32, "cuda")
    assert not K.small_step_fits(2, 1, 1024, 8, 4096, 16, 680, 0, torch.float16, "cuda")  # head dim 128
    assert not K.small_step_fits(2, 33, 1024, 16, 4096, 16, 680, 0, torch.float16, "cuda")  # 66 rows
    assert not K.small_step_fits(2, 16, 1024, 16, 4096, 16, 680, 250, torch.float16, "cuda")  # 266 keys


def test_small_step_limits_match_the_kernel():
    """small_step_fits mirrors the C limits: the header's #defines and the kernel's tile bound."""
    import re
    from pathlib import Path
    header = (Path(K.__file__).parent / "include" / "flexvar" / "small_step.h").read_text()
    source = (Path(K.__file__).parent / "src" / "small_step.cu").read_text()
    defs = {k: int(v) for k, v in re.findall(r"#define FLEXVAR_SMALL_STEP_(\w+) (\d+)", header)}
    assert defs == {"MAX_DEPTH": K.SMALL_STEP_MAX_DEPTH, "MAX_ROWS": K.SMALL_STEP_MAX_ROWS,
                    "MAX_KEYS": K.SMALL_STEP_MAX_KEYS}
    assert int(re.search(r"constexpr int kMaxTiles = (\d+);", source).group(1)) == K._SMALL_STEP_MAX_TILES


@pytest.mark.parametrize("B, l, H, d, end", [(2, 1, 4, 64, 1), (3, 7, 2, 32, 20), (2, 16, 3, 16, 16)], ids=str)
def test_attend_ref_is_sdpa_over_the_cache_prefix(B, l, H, d, end):
    """attend_ref (the Triton kernel's definition) = SDPA with scale 1 over the first `end` cached tokens;
    on CPU `attend` and the fast runtime's `attend(kernel=True)` fall back to it."""
    from flexvar.fast import attend
    from flexvar.kernels.attention import attend as attend_kernel
    from flexvar.kernels.attention import attend_ref, kernel_available
    g = torch.Generator().manual_seed(end)
    q = torch.randn(B, l, H, d, generator=g)
    kc, vc = torch.randn(2, end + 5, B, H, d, generator=g).unbind(0)
    sdpa = F.scaled_dot_product_attention(q.transpose(1, 2), kc[:end].permute(1, 2, 0, 3), vc[:end].permute(1, 2, 0, 3),
                                          scale=1.0).transpose(1, 2)
    ref = attend_ref(q, kc, vc, end)
    assert ref.shape == (B, l, H, d) and rel_err(ref, sdpa) < 1e-6
    assert not kernel_available(q)
    assert torch.equal(attend_kernel(q, kc, vc, end), ref)
    assert rel_err(attend(q, kc, vc, end, kernel=True).transpose(1, 2), sdpa) < 1e-6
    kc[end:] = float("nan")  # nothing past `end` is read
    assert torch.isfinite(attend_ref(q, kc, vc, end)).all()


def test_attend_config_by_step_size():
    """64-query blocks (the H100 sweep's best at batch 1 and 32), 16 for steps of at most 16 tokens; 32-key blocks
    in two stages for 17-32 tokens."""
    from flexvar.kernels.attention import attend_config
    assert attend_config(256) == (64, 64, 4, 3) == attend_config(33)
    assert attend_config(32) == (64, 32, 4, 2) == attend_config(17)
    assert attend_config(16) == (16, 32, 4, 2) == attend_config(1)


def test_attend_step_ref_is_the_prologue_then_attention():
    """attend_step_ref = qk_norm_cache_ref then attend_ref over [0, start + l); on CPU attend_step is it."""
    from flexvar.kernels.attention import attend_ref, attend_step, attend_step_ref, step_kernel_available
    g = torch.Generator().manual_seed(0)
    B, l, H, d, L, start = 2, 5, 3, 16, 20, 7
    qkv = torch.randn(B, l, 3 * H * d, generator=g)
    scale = torch.rand(H, 1, generator=g) + 1
    kc, vc = torch.randn(2, L, B, H, d, generator=g).unbind(0)
    k1, v1, k2, v2 = kc.clone(), vc.clone(), kc.clone(), vc.clone()
    q = K.qk_norm_cache_ref(qkv, scale, k1, v1, start)
    want = attend_ref(q, k1, v1, start + l)
    assert not step_kernel_available(qkv, kc)
    got = attend_step(qkv, scale, k2, v2, start)
    assert torch.equal(got, want) and torch.equal(k1, k2) and torch.equal(v1, v2)
    assert torch.equal(attend_step_ref(qkv, scale, kc.clone(), vc.clone(), start), want)


def test_attn_backends_sweep_options(capsys):
    """`flexvar.bench.attn_backends --sweep-configs/--sweep-steps`: parsed to tuples and step numbers; a malformed
    configuration or step list is a one-line usage error (exit 2) before anything runs."""
    from flexvar.bench import attn_backends
    assert attn_backends.sweep_configs("64,32,4,2;16,32,4,2") == [(64, 32, 4, 2), (16, 32, 4, 2)]
    assert attn_backends.sweep_steps("5,7") == {5, 7}
    for argv, what in ((["--sweep-configs", "64,32,4"], "'64,32,4' is not BLOCK_M"),
                       (["--sweep-configs", "64,48,4,2"], "'64,48,4,2' is not BLOCK_M"),
                       (["--sweep-steps", "0,1"], "'0,1' is not a list of step numbers")):
        with pytest.raises(SystemExit) as e:
            attn_backends.main(["--sweep", *argv])
        assert e.value.code == 2 and what in capsys.readouterr().err
