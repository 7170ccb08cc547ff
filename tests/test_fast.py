"""The fast runtime end to end against the reference runtime and the model, float32 on CPU (graphs are CUDA-only):
generation, logits, guidance, the first-step tables, the KV cache layouts and the runtime's options."""
import copy

import pytest
import torch

from flexvar.fast import FastRuntime, guidance_coefficients, seed_word
from flexvar.sampling import SamplingParams, guidance_weight, guide
from flexvar.schedule import Schedule

from conftest import rel_err


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


def test_seeds_above_32_bits_draw_differently(pipe_test):
    """The sampling hash reads a 32-bit word: seeds below 2**32 are their own word (the draws of earlier
    versions), and seeds that differ only above bit 32 no longer give the same images."""
    for s in (0, 1, 12345, 2 ** 32 - 1):
        assert seed_word(s) == s
    words = {seed_word(s) for s in (5, 5 + 2 ** 32, 5 + 2 ** 33, 5 + 2 ** 63, 2 ** 64 - 1)}
    assert len(words) == 5 and all(0 <= w < 2 ** 32 for w in words)
    sched = Schedule.parse("1,2,4,6")
    rt = FastRuntime(pipe_test.model, pipe_test.vae, use_graphs=False)
    p = SamplingParams()
    a = [c.clone() for c in rt.generate([3, 4], sched, p, seed=5, decode=False)[0]]
    b = rt.generate([3, 4], sched, p, seed=5 + 2 ** 32, decode=False)[0]
    assert not torch.equal(a[-1], b[-1])


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
    # the generation takes step 1's logits from the table, so it copies only the keys and values (rows=False)
    two = torch.tensor([3, cfg.null_class])
    kv_rows, kv_only = (torch.randn(cfg.depth, 2, 1, 2, cfg.heads, cfg.head_dim).bfloat16() for _ in range(2))
    x_rows = rt16.first_step_rows(table, (1, 1), two, None, None, kv_rows)
    assert rt16.first_step_rows(table, (1, 1), two, None, None, kv_only, rows=False) is None
    assert torch.equal(kv_rows, kv_only) and torch.equal(kv_only, kv.index_select(3, two))
    assert torch.equal(x_rows, x_NlC.index_select(0, two))
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


def test_fast_attention_option(pipe_test):
    with pytest.raises(ValueError, match="attention takes"):
        FastRuntime(pipe_test.model, pipe_test.vae, attention="flash")
    assert FastRuntime(pipe_test.model, pipe_test.vae).attention == "sdpa"  # CPU default
