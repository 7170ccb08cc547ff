"""In/out-painting, expansion and refinement: forced codes at every step, sizes, bad input."""
import numpy as np
import pytest
import torch
from PIL import Image

from flexvar import editing
from flexvar.cli import main
from flexvar.errors import FlexVARError
from flexvar.schedule import Schedule

from conftest import smooth_image


def forced_masks(schedule, known_final):
    """Per step, tokens all of whose final tokens are known (the documented rule)."""
    return [torch.nn.functional.interpolate(known_final.float()[None, None], size=hw, mode="area")[0, 0] >= 1 - 1e-6
            for hw in schedule]


SCHED = "1,2,4,6,8"  # 128 px


def test_inpaint_keeps_encoded_codes_outside_mask(pipe_test):
    img = smooth_image(128, 128)
    mask = torch.zeros(128, 128, dtype=torch.bool)
    mask[40:90, 20:70] = True  # partly covers tokens: they are generated
    out = editing.inpaint(pipe_test, img, mask, [1, 2], SCHED, seed=5)
    sched = Schedule.parse(SCHED)
    enc = pipe_test.encode(img[None], sched)
    known = ~torch.nn.functional.max_pool2d(mask.float()[None, None], 16)[0, 0].bool()
    assert known.sum() == 64 - 4 * 4  # rows 2..5, cols 1..4 are touched
    masks = forced_masks(sched, known)
    assert not masks[0].any() and masks[-1].sum() == 48  # 1x1 averages the mask in; the final keeps 48
    for si, keep in enumerate(masks):
        for b in range(2):
            assert torch.equal(out.codes[si][b][keep], enc[si][0][keep]), f"step {si + 1}"
    assert out.images.shape == (2, 128, 128, 3)


def test_inpaint_full_mask_is_plain_generation(pipe_test):
    img = smooth_image(128, 128, seed=1)
    full = torch.ones(128, 128, dtype=torch.bool)
    a = editing.inpaint(pipe_test, img, full, [3], SCHED, seed=9)
    b = pipe_test.generate([3], SCHED, seed=9)
    assert all(torch.equal(x, y) for x, y in zip(a.codes, b.codes))
    assert torch.equal(a.images, b.images)


def test_inpaint_paste_back(pipe_test):
    img = smooth_image(64, 96, seed=2)
    mask = torch.zeros(64, 96, dtype=torch.bool)
    mask[:, :20] = True  # out-painting the left border
    out = editing.inpaint(pipe_test, img, mask, [4], "1,2x3,4x6", paste_back=True)
    assert torch.equal(out.images[0][~mask], img[~mask])
    assert not torch.equal(out.images[0][mask], img[mask])


def test_expand_forces_the_input_where_it_sits(pipe_test):
    img = smooth_image(64, 64, seed=3)
    sched = Schedule.parse("1x2,2x4,4x8,8x16")
    out = editing.expand(pipe_test, img, [6], (128, 256), placement="center", schedule=sched, seed=1)
    assert out.images.shape == (1, 128, 256, 3)
    known = torch.zeros(8, 16, dtype=torch.bool)
    known[2:6, 6:10] = True  # 4x4 tokens centred
    own = pipe_test.encode(img[None], [(4, 4)])[0][0]
    assert torch.equal(out.codes[-1][0][2:6, 6:10], own)  # final step: the input's own codes
    latent = torch.zeros(1, pipe_test.model.cfg.code_dim, 8, 16)
    latent[..., 2:6, 6:10] = editing._latent(pipe_test, img)
    for si, (hw, keep) in enumerate(zip(sched, forced_masks(sched, known))):
        want = pipe_test.vae.quantize.quantize(torch.nn.functional.interpolate(latent, size=hw, mode="area"))[0]
        assert torch.equal(out.codes[si][0][keep], want[keep])
    assert forced_masks(sched, known)[2].sum() == 4  # a 2x2 block forced at 4x8


def test_refine_forces_low_resolution_steps(pipe_test):
    img = smooth_image(64, 64, seed=4)  # 4x4 tokens
    out = editing.refine(pipe_test, img, [2], (128, 128), schedule="1,2,3,5,8", seed=2)
    assert [tuple(c.shape[1:]) for c in out.codes] == [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (8, 8)]
    enc = pipe_test.encode(img[None], [(1, 1), (2, 2), (3, 3), (4, 4)])
    for si in range(4):
        assert torch.equal(out.codes[si], enc[si])
    assert out.images.shape == (1, 128, 128, 3)


@pytest.mark.parametrize("call, msg", [
    (lambda p, im: editing.inpaint(p, im, torch.ones(32, 64, dtype=torch.bool), [1], "1,2,4"), "mask is 32x64"),
    (lambda p, im: editing.inpaint(p, im, torch.zeros(64, 64, dtype=torch.bool), [1], "1,2,4"), "mask is empty"),
    (lambda p, im: editing.expand(p, im, [1], (48, 128)), "must be larger"),
    (lambda p, im: editing.expand(p, im, [1], (64, 64)), "must be larger"),
    (lambda p, im: editing.refine(p, im, [1], (32, 32)), "larger than"),
    (lambda p, im: editing.inpaint(p, im[:8, :8], torch.ones(8, 8, dtype=torch.bool), [1]), "smaller than one"),
    (lambda p, im: editing.inpaint(p, im, torch.ones(64, 64, dtype=torch.bool), [1], "1,2"), "schedule ends at"),
    (lambda p, im: editing.expand(p, im, [1], (64, 128), placement=(0, 8)), "multiples of 16"),
    (lambda p, im: editing.expand(p, im, [1], (64, 128), placement="left"), r"placement .* \(top, left\)"),
    (lambda p, im: editing.expand(p, im, [1], (64, 128, 3)), r"expansion size must be a pair of integers"),
    (lambda p, im: editing.refine(p, im, [1], (128.0, 128)), r"refinement size must be a pair of integers"),
    (lambda p, im: editing.refine(p, im, [1], (128, 128), seed=1.5), "seed must be an integer"),
    (lambda p, im: editing.refine(p, im, [1], (40000, 40000)), "needs at least"),
])
def test_bad_edit_input(pipe_test, call, msg):
    with pytest.raises(FlexVARError, match=msg):
        call(pipe_test, smooth_image(64, 64))


def _png(path, arr):
    Image.fromarray(np.asarray(arr)).save(path)


def test_cli_edits(capsys, ckpts, tmp_path):
    _png(tmp_path / "in.png", smooth_image(64, 64))
    _png(tmp_path / "odd.png", smooth_image(70, 60))
    m = np.zeros((64, 64), np.uint8)
    m[16:48, 16:48] = 255
    _png(tmp_path / "mask.png", m)
    ck = ["--var-ckpt", str(ckpts["var_test"]), "--vae-ckpt", str(ckpts["vae_test"])]
    assert main(["inpaint", *ck, "--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"),
                 "--labels", "1,2", "--schedule", "1,2,4", "--out", str(tmp_path / "a"), "--paste-back"]) == 0
    assert len(list((tmp_path / "a").glob("*.png"))) == 2
    assert main(["expand", *ck, "--image", str(tmp_path / "in.png"), "--labels", "1", "--size", "64x128",
                 "--out", str(tmp_path / "b")]) == 0
    assert Image.open(tmp_path / "b" / "0000_class1.png").size == (128, 64)
    # a placement against the top-left corner: a coordinate of 0 is a placement, not a bad size
    assert main(["expand", *ck, "--image", str(tmp_path / "in.png"), "--labels", "1", "--size", "64x128",
                 "--placement", "0x64", "--out", str(tmp_path / "b2")]) == 0
    assert main(["refine", *ck, "--image", str(tmp_path / "odd.png"), "--labels", "1", "--size", "128",
                 "--out", str(tmp_path / "c")]) == 0
    err = capsys.readouterr().err
    assert "resized to 64x64" in err
    assert Image.open(tmp_path / "c" / "0000_class1.png").size == (128, 128)


@pytest.mark.parametrize("argv, msg", [
    (["inpaint", "--image", "{img}", "--mask", "{small_mask}"], "mask is 32x32, the image is 64x64"),
    (["inpaint", "--image", "{img}", "--mask", "{empty_mask}"], "mask is empty"),
    (["inpaint", "--image", "{notimg}", "--mask", "{empty_mask}"], "not a readable image"),
    (["refine", "--image", "{tiny}", "--size", "64"], "smaller than one 16x16 token"),
    (["expand", "--image", "{img}", "--size", "32x128"], "must be larger"),
    (["expand", "--image", "{img}", "--size", "64x128", "--placement", "left"], "cannot read placement 'left'"),
    (["expand", "--image", "{img}", "--size", "64x128", "--placement", "0x80"], "does not fit the 64x128 canvas"),
    # outputs that cannot fit: refused before the image is resized or encoded at that size
    (["inpaint", "--image", "{img}", "--mask", "{full_mask}", "--size", "40000"], "needs at least"),
    (["expand", "--image", "{img}", "--size", "40000"], "needs at least"),
    (["refine", "--image", "{img}", "--size", "40000"], "needs at least"),
    (["refine", "--image", "{img}", "--size", "128", "--seed", "-3"], "seed must be an integer"),
])
def test_cli_edit_bad_input(capsys, tmp_path, argv, msg):
    _png(tmp_path / "img.png", smooth_image(64, 64))
    _png(tmp_path / "tiny.png", smooth_image(8, 8))
    _png(tmp_path / "small_mask.png", np.full((32, 32), 255, np.uint8))
    _png(tmp_path / "empty_mask.png", np.zeros((64, 64), np.uint8))
    _png(tmp_path / "full_mask.png", np.full((64, 64), 255, np.uint8))
    (tmp_path / "notimg.png").write_text("not an image")
    paths = {k: str(tmp_path / f"{k}.png") for k in ("img", "tiny", "small_mask", "empty_mask", "full_mask", "notimg")}
    before = set(tmp_path.iterdir())
    rc = main([a.format(**paths) for a in argv] + ["--labels", "1", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and msg in err[0], err
    assert set(tmp_path.iterdir()) == before


def test_edits_on_the_fast_runtime(pipe_test):
    """The fast runtime takes forced codes too: kept codes are forced, and a full mask is plain generation."""
    from flexvar import Pipeline
    fast = Pipeline(pipe_test.model, pipe_test.vae, fast=True)
    img = smooth_image(128, 128, seed=6)
    mask = torch.zeros(128, 128, dtype=torch.bool)
    mask[32:96, 32:96] = True
    out = editing.inpaint(fast, img, mask, [1, 2], SCHED, seed=5)
    sched = Schedule.parse(SCHED)
    enc = fast.encode(img[None], sched)
    known = ~torch.nn.functional.max_pool2d(mask.float()[None, None], 16)[0, 0].bool()
    for si, keep in enumerate(forced_masks(sched, known)):
        for b in range(2):
            assert torch.equal(out.codes[si][b][keep], enc[si][0][keep])
    full = editing.inpaint(fast, img, torch.ones(128, 128, dtype=torch.bool), [3], SCHED, seed=9)
    plain = fast.generate([3], SCHED, seed=9)
    assert all(torch.equal(x, y) for x, y in zip(full.codes, plain.codes))
    greedy = dict(top_k=1, top_p=0.0, seed=0)
    a = editing.expand(fast, img[:64, :64].contiguous(), [4], (64, 128), **greedy)
    b = editing.expand(pipe_test, img[:64, :64].contiguous(), [4], (64, 128), **greedy)
    assert all(torch.equal(x, y) for x, y in zip(a.codes, b.codes))  # greedy: same codes as the reference


def test_image_files_of_every_common_mode(tmp_path):
    """8-bit RGB, RGBA, palette and greyscale files load as their RGB; a 16-bit greyscale one is scaled to 8 bits
    (PIL's own conversion clips it to white), as a 16-bit mask is; a floating-point one is refused by name."""
    from flexvar.errors import InputError
    from flexvar.images import load_image, load_mask
    rng = np.random.default_rng(3)
    rgb = (rng.random((16, 24, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([rgb, np.full((16, 24), 200, np.uint8)]), "RGBA").save(tmp_path / "rgba.png")
    grey = (rng.random((16, 24)) * 255).astype(np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    deep = (rng.random((16, 24)) * 65535).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert np.array_equal(load_image(tmp_path / "rgb.png").numpy(), rgb)
    assert np.array_equal(load_image(tmp_path / "rgba.png").numpy(), rgb)
    assert np.array_equal(load_image(tmp_path / "grey.png").numpy(), np.repeat(grey[..., None], 3, -1))
    got = load_image(tmp_path / "deep.png").numpy().astype(float)
    assert np.abs(got - deep[..., None] / 257).max() <= 0.5 and got.std() > 50  # not clipped to white
    mask = np.zeros((16, 24), np.uint16)
    mask[4:12, 8:16] = 65535
    mask[0, 0] = 200  # dark in 16 bits: not masked
    Image.fromarray(mask).save(tmp_path / "mask16.png")
    assert torch.equal(load_mask(tmp_path / "mask16.png"), torch.from_numpy(mask > 32767))
    Image.fromarray(np.zeros((4, 4), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(InputError, match="a floating-point image; save it with 8 or 16 bits per channel"):
        load_image(tmp_path / "f.tif")
