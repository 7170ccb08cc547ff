"""The fast runtime and its pieces against the reference, float32 on CPU (graphs are CUDA-only)."""
import copy

import pytest
import torch
import torch.nn.functional as F

import flexvar.kernels as K
from flexvar.fast import FastRuntime, bicubic_taps, guidance_coefficients
from flexvar.kernels import guided_sample_ref, hashed_uniform, kept_mass_ref
from flexvar.sampling import SamplingParams, filter_top_k_top_p_, guidance_weight, guide
from flexvar.schedule import Schedule

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


@pytest.mark.parametrize("guidance", ["ramp", "constant"])
@pytest.mark.parametrize("spec", ["256-10", "512-12", [(1, 2), (2, 3), (4, 6), (8, 12)]], ids=str)
def test_fast_greedy_equals_reference(pipe_test, spec, guidance):
    sched = Schedule.parse(spec)
    kw = dict(cfg=2.0, guidance=guidance, top_k=1, top_p=0.0, seed=0)
    ref = pipe_test.generate([1, 7], sched, fast=False, **kw)
    out = pipe_test.generate([1, 7], sched, fast=True, **kw)
    for si, (a, b) in enumerate(zip(out.codes, ref.codes)):
        assert torch.equal(a, b), f"step {si + 1}"
    assert (out.images.int() - ref.images.int()).abs().max() <= 1


@pytest.mark.parametrize("fused", [False, True], ids=["per-block", "small_step"])
def test_head_major_kv_cache_gives_the_same_generation(pipe_test, fused):
    """kv_head_major_min_batch: plans of that many images or more store their cache head-major (each (image, head)'s
    keys contiguous) and generate the same codes and images bit for bit (float32, CPU: the references read the
    cache through its strides, as the GPU's `attend_step` does); smaller batches keep the token-major cache."""
    sched = Schedule.parse("1,2,3,5")
    p = SamplingParams(cfg=2.0, top_k=40, top_p=0.9)
    base = FastRuntime(pipe_test.model, pipe_test.vae, use_graphs=False, fused_small_steps=fused)
    hm = FastRuntime(pipe_test.model, pipe_test.vae, use_graphs=False, fused_small_steps=fused,
                     kv_head_major_min_batch=2)
    for labels in ([3, 4], [5]):
        a_codes, a_img = base.generate(labels, sched, p, seed=3, decode=True)
        b_codes, b_img = hm.generate(labels, sched, p, seed=3, decode=True)
        assert all(torch.equal(x, y) for x, y in zip(a_codes, b_codes)) and torch.equal(a_img, b_img)
    heads = {plan.B: plan.cache.head_major for plan in hm._plans.values()}
    assert heads == {2: True, 1: False}
    kv = next(plan.cache.kv for plan in hm._plans.values() if plan.B == 2)
    assert not kv.is_contiguous() and kv.stride(2) == pipe_test.model.cfg.head_dim
    with pytest.raises(ValueError, match="kv_head_major_min_batch"):
        FastRuntime(pipe_test.model, pipe_test.vae, use_graphs=False, kv_head_major_min_batch=0)


def test_fast_sampling_is_seeded_and_cached(pipe_test):
    sched = Schedule.parse("1,2,4,6")
    rt = FastRuntime(pipe_test.model, pipe_test.vae, use_graphs=False)
    p = SamplingParams()
    a = [c.clone() for c in rt.generate([3, 4], sched, p, seed=1, decode=False)[0]]
    rt.generate([5, 6], sched, p, seed=1, decode=False)  # another label set in between
    b = rt.generate([3, 4], sched, p, seed=1, decode=False)[0]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = rt.generate([3, 4], sched, p, seed=2, decode=False)[0]
    assert not torch.equal(a[-1], c[-1])
    assert len(rt._mods) == 2 and len(rt._plans) == 1


def test_label_set_is_cached_with_its_labels(pipe_test):
    """A label set's device labels and modulation are computed once; `modulation` is the same entry's rest."""
    rt = FastRuntime(pipe_test.model, pipe_test.vae, use_graphs=False)
    both = (3, 9) + (pipe_test.model.cfg.null_class,) * 2
    labels, cond, blocks, head = rt.label_set(both)
    assert labels.dtype == torch.long and labels.tolist() == list(both)
    assert rt.label_set(both)[0] is labels and all(a is b for a, b in zip(rt.modulation(both), (cond, blocks, head)))
    want = pipe_test.model.modulation(torch.tensor(both))
    assert all(torch.equal(a, b) for a, b in zip((cond, blocks, head), want))


@pytest.mark.parametrize("first", [(1, 1), (1, 2), (2, 2)], ids=str)
def test_first_step_table_is_the_first_step(pipe_test, first):
    """The table's keys, values and output of a label = the first step run on that label alone."""
    rt = FastRuntime(pipe_test.model, pipe_test.vae, use_graphs=False, first_step_table=True)
    kv, x_NlC, head_NlV = rt.first_step(first)
    assert head_NlV is None and not rt.first_step_float32  # a float32 runtime: its own step is the float32 one
    cfg = pipe_test.model.cfg
    assert kv.numel() * kv.element_size() + x_NlC.numel() * 4 == rt.first_step_bytes(first)
    assert x_NlC.shape == (cfg.num_classes + 1, first[0] * first[1], cfg.width)
    from flexvar.kv_cache import KVCache
    for label in (0, 4, cfg.null_class):
        cond, blocks, _ = rt.modulation((label,))
        cache = KVCache(cfg.depth, first[0] * first[1], 1, cfg.heads, cfg.head_dim)
        x = rt.transformer(cond[:, None] + pipe_test.model.pos_start + rt.positions(first)[None], blocks, cache.kv, 0)
        assert rel_err(x_NlC[label], x[0]) < 1e-5
        assert rel_err(kv[:, :, :, label], cache.kv[:, :, :, 0]) < 1e-5
    assert rt.first_step(first) is rt.first_step(first)  # built once
    for hw in [(1, 3), (1, 4), (1, 5), (1, 6)]:  # at most 4 first scales are kept (LRU)
        rt.first_step(hw)
    assert first not in rt._first and len(rt._first) == 4


@pytest.mark.parametrize("guidance", ["ramp", "constant"])
def test_first_step_table_in_float32_for_bf16(pipe_test, guidance):
    """A bf16 runtime computes its first-step table in float32 on the upcast weights (`first_step_float32`):
    the output and the head's output equal the float32 runtime's on those weights, the keys and values are
    theirs rounded once, step 1's guided logits come from the table, and greedy step-1 codes are the float32
    runtime's. With first_step_float32=False the table is the bf16 step's (no head outputs)."""
    from flexvar.fast import float32_copy
    from flexvar.kv_cache import KVCache
    m16, vae16 = copy.deepcopy(pipe_test.model).bfloat16(), copy.deepcopy(pipe_test.vae).bfloat16()
    m32, vae32 = float32_copy(m16), copy.deepcopy(vae16).float()
    assert m32.head.weight.dtype == torch.float32 and torch.equal(m32.head.weight, m16.head.weight.float())
    rt16 = FastRuntime(m16, vae16, use_graphs=False, first_step_table=True)
    rt32 = FastRuntime(m32, vae32, use_graphs=False, first_step_table=True)
    assert rt16.first_step_float32 and not rt32.first_step_float32
    was = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")  # a caller's TF32: the build runs at "highest" and restores it
    try:
        kv, x_NlC, head_NlV = table = rt16.first_step((1, 1))
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(was)
    kv32, x32, _ = rt32.first_step((1, 1))
    cfg = m16.cfg
    assert kv.dtype == torch.bfloat16 and head_NlV.shape == (cfg.num_classes + 1, 1, cfg.vocab_size)
    assert kv.numel() * 2 + x_NlC.numel() * 4 + head_NlV.numel() * 4 == rt16.first_step_bytes((1, 1))
    assert rel_err(x_NlC, x32) < 1e-5 and rel_err(kv.float(), kv32) < 5e-3
    for label in (0, 7, cfg.null_class):
        _, _, head = rt32.modulation((label,))
        assert rel_err(head_NlV[label], rt32.logits(x32[label:label + 1], head)[0]) < 1e-5
    sched, p = Schedule.parse("1,2,3"), SamplingParams(cfg=3.0, guidance=guidance, top_k=1, top_p=0.0)
    coef = guidance_coefficients(sched, p)
    labels = list(range(cfg.num_classes))
    labels_2B, _, _, head_2B = rt32.label_set(tuple(labels) + (cfg.null_class,) * len(labels))
    want = rt32.guided_logits(x32.index_select(0, labels_2B), head_2B, coef[0])
    got = rt16.first_step_logits(table, labels_2B, coef[0])
    assert rel_err(got, want) < 1e-5 and torch.equal(got.argmax(-1), want.argmax(-1))
    assert torch.equal(rt16.generate(labels, sched, p, 0, decode=False)[0][0],
                       rt32.generate(labels, sched, p, 0, decode=False)[0][0])
    plain = FastRuntime(m16, vae16, use_graphs=False, first_step_table=True, first_step_float32=False)
    kv_b, x_b, head_b = plain.first_step((1, 1))
    assert head_b is None and plain.first_step_logits(plain.first_step((1, 1)), labels_2B, coef[0]) is None
    cond, blocks, _ = plain.modulation((5,))
    cache = KVCache(cfg.depth, 1, 1, cfg.heads, cfg.head_dim, torch.bfloat16)
    x = plain.transformer(cond[:, None].float() + m16.pos_start.float() + plain.positions((1, 1))[None].float(),
                          blocks, cache.kv, 0)
    assert torch.equal(x_b[5], x[0]) and rel_err(x_b[5], x32[5]) > 1e-4  # the bf16 step: further from float32


def test_pipeline_builds_the_first_step_table_from_float32_weights(pipe_test):
    """A bf16 Pipeline over float32 weights builds the 1x1 first-step table before the cast
    (`build_first_step_table`): the runtime uses it for the runtime's life, step 1's logits equal the float32
    runtime's and greedy step-1 codes are its codes; other first scales build from the upcast bf16 weights."""
    from flexvar import Pipeline
    cfg = pipe_test.model.cfg
    fp32 = FastRuntime(pipe_test.model, pipe_test.vae, use_graphs=False, first_step_table=True)
    m, v = copy.deepcopy(pipe_test.model), copy.deepcopy(pipe_test.vae)
    pipe = Pipeline(m, v, dtype="bf16", fast_options={"first_step_table": True})
    assert pipe.model.head.weight.dtype == torch.bfloat16
    rt = pipe.fast_runtime
    table = pipe.fast_options["first_step_tables"][(1, 1)]
    assert rt.first_step((1, 1)) is table
    rt.clear()
    for hw in [(1, 3), (1, 4), (1, 5), (1, 6)]:  # the LRU's churn leaves it
        rt.first_step(hw)
    assert rt.first_step((1, 1)) is table and rt.first_step((1, 2)) is not table
    kv, x_NlC, _ = table
    kv32, x32, _ = fp32.first_step((1, 1))
    assert kv.dtype == torch.bfloat16 and rel_err(x_NlC, x32) < 1e-5 and rel_err(kv.float(), kv32) < 5e-3
    sched, p = Schedule.parse("1,2,3"), SamplingParams(cfg=3.0, top_k=1, top_p=0.0)
    labels = list(range(cfg.num_classes))
    labels_2B, _, _, head_2B = fp32.label_set(tuple(labels) + (cfg.null_class,) * len(labels))
    coef = guidance_coefficients(sched, p)
    want = fp32.guided_logits(x32.index_select(0, labels_2B), head_2B, coef[0])
    assert rel_err(rt.first_step_logits(table, labels_2B, coef[0]), want) < 1e-5
    assert torch.equal(rt.generate(labels, sched, p, 0, decode=False)[0][0],
                       fp32.generate(labels, sched, p, 0, decode=False)[0][0])
    # not built: float32 pipelines, bf16 weights, the table off, the reference runtime on CPU
    for kw in (dict(dtype="fp32", fast_options={"first_step_table": True}),
               dict(dtype="bf16", fast_options={"first_step_table": True, "first_step_float32": False}),
               dict(dtype="bf16"), dict(dtype="bf16", fast=True, fast_options={"first_step_table": False})):
        assert "first_step_tables" not in Pipeline(copy.deepcopy(pipe_test.model), v, **kw).fast_options, kw
    with pytest.raises(ValueError, match="first_step_tables"):
        FastRuntime(pipe.model.float(), v.float(), first_step_tables={(1, 1): table})  # a bf16 table, float32 runtime


def test_plan_keeps_its_first_step_table(pipe_test):
    """A plan reads the table it was built with, also after the runtime's LRU dropped it (no rebuild)."""
    rt = FastRuntime(pipe_test.model, pipe_test.vae, use_graphs=False, first_step_table=True)
    sched, p = Schedule.parse("1,2,4"), SamplingParams()
    a = [c.clone() for c in rt.generate([1, 2], sched, p, seed=3, decode=False)[0]]
    table = next(iter(rt._plans.values())).first
    for hw in [(1, 3), (1, 4), (1, 5), (1, 6)]:
        rt.first_step(hw)
    assert (1, 1) not in rt._first
    b = rt.generate([1, 2], sched, p, seed=3, decode=False)[0]
    assert (1, 1) not in rt._first and next(iter(rt._plans.values())).first is table
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("spec", ["1,2,4,6", [(1, 2), (2, 3), (4, 6)], "2,4,6"], ids=str)
def test_first_step_table_gives_the_same_generation(pipe_test, spec):
    """Seeded sampling with the table, without it, and with a table over its memory limit (not built)."""
    sched = Schedule.parse(spec)
    p = SamplingParams(cfg=2.0)
    runs = []
    for kw in (dict(first_step_table=False), dict(first_step_table=True),
               dict(first_step_table=True, first_step_max_bytes=0)):
        rt = FastRuntime(pipe_test.model, pipe_test.vae, use_graphs=False, **kw)
        codes, image = rt.generate([3, 9], sched, p, seed=5)
        plan = next(iter(rt._plans.values()))
        runs.append(([c.clone() for c in codes], image.clone(), plan.cache.kv.clone(), plan.first))
    (c0, i0, kv0, _), (c1, i1, kv1, t1), (c2, i2, kv2, t2) = runs
    assert t1 is not None and t2 is None
    for a, b, c in zip(c0, c1, c2):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert torch.equal(i0, i2) and (i0.int() - i1.int()).abs().max() <= 1
    assert torch.equal(kv0, kv2) and rel_err(kv1, kv0) < 1e-5


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


def test_fast_skinny_steps_match(pipe_tiny, pipe_test, monkeypatch):
    """The projection and fc2 as summed split-K partials (the op's CPU definition here) in every step, or in none."""
    import flexvar.kernels.skinny_mm as sm
    from flexvar.bench.precision import fast_teacher_forced
    m = pipe_tiny.model
    sched = Schedule.parse("1,2,3,5")
    g = torch.Generator().manual_seed(0)
    codes = [torch.randint(0, m.cfg.vocab_size, (2, h, w), generator=g) for h, w in sched]
    on = FastRuntime(m, pipe_tiny.vae, use_graphs=False, skinny_rows=1000)
    off = FastRuntime(m, pipe_tiny.vae, use_graphs=False)
    assert off.skinny_rows == 0 and on.skinny_rows == 1000 and on.skinny_splits == (1, 4)
    assert FastRuntime(pipe_test.model, pipe_test.vae, skinny_rows=1000).skinny_rows == 0  # width 64: no K tiling
    calls = []
    op = sm.skinny_partials
    monkeypatch.setattr(sm, "skinny_partials", lambda x, w, splits: calls.append(splits) or op(x, w, splits))
    a = fast_teacher_forced(on, [1, 2], codes, sched)
    assert calls == [1, 4] * m.cfg.depth * len(sched)  # projection and fc2 of every block and step
    b = fast_teacher_forced(off, [1, 2], codes, sched)
    assert len(calls) == 2 * m.cfg.depth * len(sched)
    assert all(rel_err(x, y) < 1e-5 for x, y in zip(a, b))


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


@pytest.mark.parametrize("guidance", ["ramp", "constant"])
def test_guidance_coefficients_sum_to_one(guidance):
    """(a, b) per step are the rule's weights on (cond, uncond): ramp (1 + t, t), constant (t, t - 1); a - b = 1,
    which lets the head's bias be added once after guiding its input."""
    sched, p = Schedule.parse("256-10"), SamplingParams(cfg=2.5, guidance=guidance)
    coef = guidance_coefficients(sched, p)
    ts = torch.tensor([guidance_weight(si, len(sched), hw, p) for si, hw in enumerate(sched)], dtype=torch.float64)
    want = torch.stack((1 + ts, ts) if guidance == "ramp" else (ts, ts - 1), dim=1).float()
    assert coef.dtype == torch.float32 and torch.equal(coef, want)
    assert torch.allclose(coef[:, 0] - coef[:, 1], torch.ones(len(sched)))
    if guidance == "ramp":  # t = 0 at the first step: b is +0.0, not -0.0
        assert coef[0, 1] == 0 and not torch.signbit(coef).any()


@pytest.mark.parametrize("guidance", ["ramp", "constant"])
def test_guided_logits_are_the_guided_head(pipe_test, guidance):
    """`guided_logits` (guidance on the head's input) = guiding the two halves' logits, every step's weight."""
    rt = FastRuntime(pipe_test.model, pipe_test.vae, use_graphs=False)
    sched, p = Schedule.parse([1, 2, 3, 5]), SamplingParams(cfg=2.5, guidance=guidance)
    g = torch.Generator().manual_seed(8)
    _, _, head = rt.modulation((4, 9, pipe_test.model.cfg.null_class, pipe_test.model.cfg.null_class))
    coef = guidance_coefficients(sched, p)
    for si, hw in enumerate(sched):
        x = torch.randn(4, hw[0] * hw[1], pipe_test.model.cfg.width, generator=g) * 3
        want = guide(rt.logits(x, head), guidance_weight(si, len(sched), hw, p), guidance)
        got = rt.guided_logits(x, head, coef[si])
        assert got.shape == (2, hw[0] * hw[1], pipe_test.model.cfg.vocab_size)
        assert rel_err(got, want) < 1e-5, (si, rel_err(got, want))


@pytest.mark.parametrize("fused", [False, True], ids=["per-block", "small_step"])
def test_fast_logits_match_reference(pipe_test, fused):
    """The fast path's pieces (token prep, the blocks with their cache, head) against the reference's logits;
    `small_step` (every block of a step as one op: its CPU definition here) on every step or none."""
    sched = Schedule.parse([1, 3, 5])
    g = torch.Generator().manual_seed(0)
    codes = [torch.randint(0, pipe_test.model.cfg.vocab_size, (2, h, w), generator=g) for h, w in sched]
    labels = torch.tensor([2, 3])
    ref = pipe_test.teacher_forced_logits(labels, codes, sched)
    rt = FastRuntime(pipe_test.model, pipe_test.vae, use_graphs=False, fused_small_steps=fused)
    from flexvar.kv_cache import KVCache
    cfg = pipe_test.model.cfg
    cond, blocks, head = rt.modulation(tuple(labels.tolist()))
    cache = KVCache(cfg.depth, sched.total_tokens, 2, cfg.heads, cfg.head_dim)
    for si, hw in enumerate(sched):
        x = (cond[:, None] + pipe_test.model.pos_start + rt.positions(hw)[None]) if si == 0 else rt.next_tokens(codes[si - 1], hw)
        x = rt.transformer(x, blocks, cache.kv, sched.offsets[si])
        assert rel_err(rt.logits(x, head), ref[si]) < 1e-5


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


def test_fast_options_reach_the_runtime():
    """Pipeline(fast_options=...) and `--tune-decoder` configure the FastRuntime the pipeline builds."""
    from flexvar import Pipeline
    from flexvar.cli import build_parser, fast_options
    pipe = Pipeline.from_random(fast_options={"small_step_rows": 8, "use_graphs": False})
    assert pipe.fast_runtime.small_step_rows == 8 and not pipe.fast_runtime.use_graphs
    args = build_parser().parse_args(["generate", "--labels", "1", "--out", "o", "--tune-decoder"])
    assert fast_options(args) == {"tune": ("decoder",)}
    assert fast_options(build_parser().parse_args(["generate", "--labels", "1", "--out", "o"])) == {}


def test_unknown_tune_target_is_refused(pipe_test):
    with pytest.raises(ValueError, match="tune takes"):
        FastRuntime(pipe_test.model, pipe_test.vae, tune=("decoders",))


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


def test_fast_attention_option(pipe_test):
    with pytest.raises(ValueError, match="attention takes"):
        FastRuntime(pipe_test.model, pipe_test.vae, attention="flash")
    assert FastRuntime(pipe_test.model, pipe_test.vae).attention == "sdpa"  # CPU default


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
