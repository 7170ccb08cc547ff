"""The KV-cached step path against the full-sequence forward with the block-causal mask."""
import pytest
import torch

from flexvar import runtime
from flexvar.kv_cache import KVCache, head_major_copy
from flexvar.model import block_causal_mask
from flexvar.schedule import Schedule

from conftest import rel_err

SCHEDULES = ["256-10", "256-6", [1, 2, 3], [(1, 2), (2, 4), (4, 8), (8, 16)], [(1, 1), (3, 2), (5, 7), (9, 12)],
             [1, 4, 16, 33, 40], [(2, 3), (2, 3), (5, 5)]]


@pytest.mark.parametrize("spec", SCHEDULES, ids=str)
def test_cached_steps_equal_full_sequence(pipe_test, spec):
    sched = Schedule.parse(spec)
    g = torch.Generator().manual_seed(len(sched) * 31 + sched.total_tokens)
    V = pipe_test.model.cfg.vocab_size
    codes = [torch.randint(0, V, (3, h, w), generator=g) for h, w in sched]
    labels = torch.tensor([1, 9, 10])  # 10 is the null class of the 'test' preset
    cached = pipe_test.teacher_forced_logits(labels, codes, sched)
    full = runtime.full_sequence_logits(pipe_test.model, pipe_test.vae.quantize, labels, codes[:-1], sched)
    for a, b in zip(cached, full):
        assert a.shape == b.shape
        assert rel_err(a, b) < 1e-5


@pytest.mark.parametrize("spec", ["256-10", [(1, 2), (2, 4), (3, 6)], [2, 20, 36]], ids=str)
def test_greedy_generation_follows_full_sequence(pipe_test, spec):
    """Each generated step's codes are the argmax of guided full-sequence logits."""
    sched = Schedule.parse(spec)
    out = pipe_test.generate([2, 5], sched, cfg=1.5, guidance="constant", top_k=1, top_p=0.0, seed=3, decode=False)
    labels = torch.tensor([2, 5])
    null = torch.full_like(labels, pipe_test.num_classes)
    c = runtime.full_sequence_logits(pipe_test.model, pipe_test.vae.quantize, labels, out.codes[:-1], sched)
    u = runtime.full_sequence_logits(pipe_test.model, pipe_test.vae.quantize, null, out.codes[:-1], sched)
    for si, hw in enumerate(sched):
        guided = u[si] + 1.5 * (c[si] - u[si])
        assert torch.equal(guided.argmax(-1).view(2, *hw), out.codes[si])


def test_block_causal_mask():
    m = block_causal_mask([1, 4, 2])
    assert m.shape == (7, 7)
    assert m[0].tolist() == [True] + [False] * 6
    assert m[1].tolist() == [True] * 5 + [False] * 2  # a step sees its own tokens
    assert m[6].all()


@pytest.mark.parametrize("token_major, head_major", [(True, False), (False, False), (True, True)])
def test_kv_cache_layouts(token_major, head_major):
    cache = KVCache(depth=2, max_tokens=10, batch=3, heads=2, head_dim=4, token_major=token_major,
                    head_major=head_major)
    cache.kv.copy_(torch.randn(cache.kv.shape))  # no uninitialised memory (a NaN there fails torch.equal below)
    k, v = torch.randn(3, 4, 2, 4), torch.randn(3, 4, 2, 4)  # (B, l, H, d)
    cache.update_(1, 2, k, v)
    ka, va = cache.attention_kv(1, 6)
    assert ka.shape == (3, 2, 6, 4)
    assert torch.equal(ka[:, :, 2:], k.transpose(1, 2)) and torch.equal(va[:, :, 2:], v.transpose(1, 2))
    if token_major:
        assert cache.keys(1, 6).shape == (6, 3, 2, 4) and torch.equal(cache.keys(1, 6)[2:], k.transpose(0, 1))
        assert cache.keys(1, 6).is_contiguous() != head_major
    if head_major:  # one (image, head)'s tokens adjacent: the token stride is the head dim
        assert cache.kv.stride()[2:] == (4, 2 * 10 * 4, 10 * 4, 1)
        copy = head_major_copy(cache.kv[1, 0])  # the same layout for a tensor of one layer's keys
        assert torch.equal(copy, cache.kv[1, 0]) and copy.stride() == cache.kv[1, 0].stride()
    ptr = cache.kv.data_ptr()
    with pytest.raises(IndexError):
        cache.update_(0, 8, k, v)
    assert cache.kv.data_ptr() == ptr  # never reallocated


def test_kv_cache_head_major_needs_token_major():
    with pytest.raises(ValueError, match="head_major"):
        KVCache(depth=1, max_tokens=4, batch=1, heads=1, head_dim=2, token_major=False, head_major=True)


def test_memory_floor_is_what_the_runtime_allocates(pipe_test, monkeypatch):
    """`Pipeline.memory_floor`'s KV cache is the reference runtime's cache to the byte, its logits the largest step's
    guided float32 logits, its decoder term one full-resolution activation of the decoder's first level; a
    schedule whose floor exceeds the machine is refused before anything is allocated."""
    sched, B = Schedule.parse("1,2,4,6"), 3
    made = []
    real_init = KVCache.__init__

    def spy(self, *a, **k):
        real_init(self, *a, **k)
        made.append(self.kv.numel() * self.kv.element_size())

    monkeypatch.setattr(KVCache, "__init__", spy)
    pipe_test.generate([1, 2, 3], sched, top_k=1, top_p=0.0, fast=False)
    floor = pipe_test.memory_floor(sched, B)
    cfg = pipe_test.model.cfg
    assert made == [floor["KV cache"]]
    assert floor["logits"] == B * 36 * cfg.vocab_size * 4
    dec = pipe_test.vae.decoder
    acts = []
    hook = dec.conv_out.register_forward_hook(lambda m, inp, out: acts.append(inp[0]))
    pipe_test.decode(torch.randint(0, cfg.vocab_size, (B, 6, 6)))
    hook.remove()
    assert floor["decoder"] == acts[0].numel() * acts[0].element_size()
    assert "decoder" not in pipe_test.memory_floor(sched, B, decode=False)
    pipe_test.check_fits(sched, B)
    from flexvar.errors import InputError
    with pytest.raises(InputError, match=r"schedule 1,2,40000 at batch 1 needs at least .* TB \(KV cache"):
        pipe_test.generate([1], "1,2,40000")


def test_api_labels_and_codes_checks(pipe_test):
    """Labels: Python, NumPy and tensor integers are taken as they are; floats, bools, strings and None are
    refused by name. Codes: an empty, boolean or non-tensor code map is refused, not handed to a convolution."""
    import numpy as np

    from flexvar.errors import InputError
    want = [3, 7]
    for labels in (want, np.array(want), torch.tensor(want), (np.int64(3), 7)):
        assert pipe_test.labels_tensor(labels).tolist() == want
    assert pipe_test.labels_tensor(np.int64(5)).tolist() == [5]
    for bad, msg in ((np.array([1.0]), "label 1.0 is not an integer"), ([True], "label True is not an integer"),
                     ("12", "labels must be class indices"), (None, "labels must be class indices"),
                     ([], "no labels given")):
        with pytest.raises(InputError, match=msg):
            pipe_test.labels_tensor(bad)
    for bad in (torch.zeros(1, 0, 2, dtype=torch.long), torch.ones(1, 2, 2, dtype=torch.bool), [[1]]):
        with pytest.raises(InputError, match=r"codes must be an integer tensor \(B, h, w\) of at least one code"):
            pipe_test.decode(bad)
    img = torch.randint(0, 256, (1, 64, 64, 3), dtype=torch.uint8)
    assert [tuple(c.shape) for c in pipe_test.encode(img, "1,2,4")] == [(1, 1, 1), (1, 2, 2), (1, 4, 4)]
    with pytest.raises(InputError, match="schedule step 8x8 is finer than the image's 4x4 tokens"):
        pipe_test.encode(img, "1,2,8")
