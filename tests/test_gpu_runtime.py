"""GPU checks of the fast runtime end to end (marked gpu; skipped without CUDA): CUDA graphs, its options and the
fused kernels in place, against the reference runtime (float32 greedy codes identical, fp16/bf16 logits near
float32, graph replay = eager, in-painting)."""
import copy

import pytest
import torch

from flexvar import Pipeline
from flexvar.fast import FastRuntime
from flexvar.sampling import SamplingParams, guidance_weight, guide
from flexvar.schedule import Schedule

from conftest import rel_err, smooth_image

pytestmark = pytest.mark.gpu


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


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_pipeline_first_step_from_float32_weights(models, dtype):
    """A half-precision Pipeline over float32 weights on CUDA builds the 1x1 first-step table before the cast: in
    CUDA graphs its greedy step-1 codes over every class equal the float32 pipeline's, and its step-1 guided
    logits equal the float32 runtime's to ~1e-5."""
    model, vae = models
    cfg = model.cfg
    half = Pipeline(copy.deepcopy(model), copy.deepcopy(vae), device="cuda", dtype=dtype)
    full = Pipeline(copy.deepcopy(model), copy.deepcopy(vae), device="cuda", dtype=torch.float32)
    assert (1, 1) in half.fast_options["first_step_tables"] and half.use_fast
    labels = list(range(cfg.num_classes))
    kw = dict(cfg=3.0, top_k=1, top_p=0.0, seed=0)
    a = half.generate(labels, "1,2,3", **kw).codes[0]
    b = full.generate(labels, "1,2,3", **kw).codes[0]
    assert torch.equal(a, b)
    rt, rt32 = half.fast_runtime, full.fast_runtime
    sched, p = Schedule.parse("1,2,3"), SamplingParams(cfg=3.0)
    from flexvar.fast import guidance_coefficients
    coef = guidance_coefficients(sched, p).cuda()
    labels_2B, _, _, head = rt32.label_set(tuple(labels) + (cfg.null_class,) * len(labels))
    want = rt32.guided_logits(rt32.first_step((1, 1))[1].index_select(0, labels_2B), head, coef[0])
    assert rel_err(rt.first_step_logits(rt.first_step((1, 1)), labels_2B, coef[0]), want) < 1e-5


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


def test_fast_fp32_decodes_a_batch_without_the_group_norm_op(models):
    """A float32 runtime decodes batches of at least `group_norm_min_batch` through Inductor's GroupNorms (the op's
    kernels take fp16/bf16 only): greedy codes = reference, images within 1. Forced on in float32, the op runs its
    reference path, whose outputs are channels-last as its fake states (session 25: the compiled decoder's stride
    check failed there), and decodes the same images to within 1."""
    model, vae = models
    pipe = Pipeline(copy.deepcopy(model), copy.deepcopy(vae), device="cuda", dtype=torch.float32)
    rt = pipe.fast_runtime
    assert rt.decoder_gn is None
    labels, kw = list(range(rt.group_norm_min_batch)), dict(cfg=2.5, top_k=1, top_p=0.0, seed=0)
    ref = pipe.generate(labels, "1,2,3,4", fast=False, **kw)
    out = pipe.generate(labels, "1,2,3,4", **kw)
    assert all(torch.equal(a.cpu(), b.cpu()) for a, b in zip(out.codes, ref.codes))
    assert (out.images.int() - ref.images.int()).abs().max() <= 1
    forced = FastRuntime(copy.deepcopy(model), copy.deepcopy(vae), group_norm_op=True)
    assert forced.decoder_gn is not None
    codes, img = forced.generate(labels, Schedule.parse("1,2,3,4"), SamplingParams(cfg=2.5, top_k=1, top_p=0.0), 0)
    assert all(torch.equal(a.cpu(), b.cpu()) for a, b in zip(codes, ref.codes))
    assert (img.cpu().int() - out.images.int()).abs().max() <= 1


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


@pytest.mark.parametrize("batch", [1, 8])
def test_last_step_kv_writes_skipped_same_generation_fp16(models, batch):
    """The default skips the last step's cache writes (`last_step_kv=False`): in CUDA graphs the same codes and
    images bit for bit as a runtime that writes them, and the last step's cache region is left as it was."""
    model, vae = copy.deepcopy(models[0]).half(), copy.deepcopy(models[1]).half()
    sched, p, labels = Schedule.parse("256-10"), SamplingParams(), list(range(batch))
    a = FastRuntime(model, vae, last_step_kv=True)
    b = FastRuntime(model, vae)
    a_codes, a_img = a.generate(labels, sched, p, 4)
    b.generate(labels, sched, p, 4)  # builds and captures the plan; its cache's last region is then overwritten
    cache = next(iter(b._plans.values())).cache.kv
    last = sched.offsets[-2]  # the last step's first token (offsets[-1] is the total)
    cache[:, :, last:].fill_(7.0)
    b_codes, b_img = b.generate(labels, sched, p, 4)
    assert all(torch.equal(x, y) for x, y in zip(a_codes, b_codes)) and torch.equal(a_img, b_img)
    assert bool((cache[:, :, last:] == 7.0).all())
    a_cache = next(iter(a._plans.values())).cache.kv
    assert torch.equal(a_cache[:, :, :last], cache[:, :, :last]) and not bool((a_cache[:, :, last:] == 7.0).any())


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


def test_device_ordinal_past_the_machine_is_refused():
    """`cuda:N` past the machine's devices is one InputError before anything is built on it."""
    from flexvar.errors import InputError
    n = torch.cuda.device_count()
    with pytest.raises(InputError, match=rf"device cuda:{n}: this machine has {n} CUDA device"):
        Pipeline.from_random("tiny", "tiny", device=f"cuda:{n}")
