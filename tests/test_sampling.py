import pytest
import torch

from flexvar.errors import SamplingError
from flexvar.sampling import (SamplingParams, filter_top_k_top_p_, guidance_weight, guide, sample,
                              step_top_k)


def brute_force_keep(logits_V: torch.Tensor, top_k: int, top_p: float) -> set[int]:
    """The release's rule, one row at a time in plain Python."""
    vals = logits_V.tolist()
    keep = set(range(len(vals)))
    if top_k > 0:
        kth = sorted(vals, reverse=True)[top_k - 1]
        keep = {i for i in keep if vals[i] >= kth}
    if 0 < top_p < 1:
        kept = sorted(keep, key=lambda i: vals[i])  # ascending
        probs = torch.tensor([vals[i] for i in kept]).softmax(0).tolist()
        acc = 0.0
        for j, i in enumerate(kept):
            acc += probs[j]
            if acc <= 1 - top_p and j != len(kept) - 1:
                keep.discard(i)
    return keep


@pytest.mark.parametrize("top_k, top_p", [(0, 0.0), (1, 0.0), (5, 0.0), (0, 0.5), (40, 0.9), (900, 0.95), (3, 0.999)])
def test_filter_matches_definition(top_k, top_p):
    g = torch.Generator().manual_seed(top_k * 7 + int(top_p * 100))
    logits = torch.randn(2, 3, 1000, generator=g) * 3
    out = filter_top_k_top_p_(logits.clone(), top_k, top_p)
    for b in range(2):
        for t in range(3):
            got = set(torch.nonzero(out[b, t] > float("-inf")).flatten().tolist())
            assert got == brute_force_keep(logits[b, t], top_k, top_p)


def test_greedy_draw_is_argmax_and_seeded_draws_repeat():
    logits = torch.randn(2, 50, 300)
    assert torch.equal(sample(logits, 1, 0.0, torch.Generator().manual_seed(0)), logits.argmax(-1))
    a = sample(logits, 20, 0.9, torch.Generator().manual_seed(5))
    b = sample(logits, 20, 0.9, torch.Generator().manual_seed(5))
    c = sample(logits, 20, 0.9, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # every draw lies inside the kept set
    kept = filter_top_k_top_p_(logits.clone(), 20, 0.9) > float("-inf")
    assert kept.gather(-1, a[..., None]).all()


def test_guidance_rules():
    cond, uncond = torch.randn(2, 4, 10), torch.randn(2, 4, 10)
    both = torch.cat([cond, uncond])
    torch.testing.assert_close(guide(both, 0.7, "ramp"), 1.7 * cond - 0.7 * uncond)
    torch.testing.assert_close(guide(both, 2.5, "constant"), uncond + 2.5 * (cond - uncond))
    p = SamplingParams(cfg=2.5)
    assert guidance_weight(0, 10, (1, 1), p) == 0.0
    assert guidance_weight(9, 10, (16, 16), p) == pytest.approx(2.5)
    assert guidance_weight(11, 13, (16, 16), p) == pytest.approx(2.5 * 11 / 9)  # exceeds cfg, as released
    assert guidance_weight(3, 12, (23, 23), p) == 2.5  # above max_pn: full cfg
    assert guidance_weight(0, 10, (4, 23), p) == 2.5  # non-square: the longer side decides
    assert guidance_weight(0, 1, (16, 16), p) == 2.5
    assert guidance_weight(0, 10, (1, 1), SamplingParams(cfg=2.5, guidance="constant")) == 2.5


def test_off_grid_policy():
    p = SamplingParams(top_k=900)
    assert step_top_k((16, 16), p) == 900
    assert step_top_k((7, 7), p) == 1  # not on the grid
    assert step_top_k((23, 23), p) == 1  # above max_pn
    assert step_top_k((8, 16), p) == 900
    assert step_top_k((8, 9), p) == 1
    assert step_top_k((7, 7), SamplingParams(top_k=900, greedy_off_grid=False)) == 900


@pytest.mark.parametrize("kw, msg", [({"cfg": -1}, "cfg"), ({"top_p": 1.5}, "top_p"), ({"top_p": -0.1}, "top_p"),
                                     ({"top_k": -3}, "top_k"), ({"guidance": "linear"}, "guidance")])
def test_bad_params(kw, msg):
    with pytest.raises(SamplingError, match=msg):
        SamplingParams(**kw)
