"""Make the README's image-to-image pictures.

    python docs/make_examples.py [--var-ckpt F --vae-ckpt F] [--out docs/img]

Without checkpoints it uses the embedded default (random weights): the pictures then only show
*where* codes are forced and what sizes come out, not image quality.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from flexvar import Pipeline, editing
from flexvar.images import save_png


def test_card(H: int, W: int) -> torch.Tensor:
    """A synthetic input: a colour gradient with a few shapes."""
    y, x = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    img = torch.stack([x, y, 1 - x * y], -1).mul(255).to(torch.uint8).numpy()
    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)
    d.ellipse((W * 0.2, H * 0.2, W * 0.55, H * 0.55), fill=(240, 200, 40))
    d.rectangle((W * 0.6, H * 0.5, W * 0.9, H * 0.85), fill=(30, 60, 160))
    return torch.from_numpy(__import__("numpy").asarray(pil).copy())


def strip(images: list[torch.Tensor], path: Path, gap: int = 8) -> None:
    H = max(i.shape[0] for i in images)
    W = sum(i.shape[1] for i in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    x = 0
    for im in images:
        canvas.paste(Image.fromarray(im.numpy()), (x, 0))
        x += im.shape[1] + gap
    canvas.save(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--var-ckpt")
    ap.add_argument("--vae-ckpt")
    ap.add_argument("--out", default="docs/img")
    args = ap.parse_args()
    pipe = (Pipeline.from_checkpoints(args.var_ckpt, args.vae_ckpt) if args.var_ckpt
            else Pipeline.from_random())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    img = test_card(256, 256)
    mask = torch.zeros(256, 256, dtype=torch.bool)
    mask[64:192, 96:224] = True
    shown_mask = torch.where(mask[..., None], torch.tensor([255, 255, 255], dtype=torch.uint8), img // 3)
    a = editing.inpaint(pipe, img, mask, [207], "256-10", seed=0, paste_back=True).images[0]
    strip([img, shown_mask, a], out / "inpaint.png")
    b = editing.expand(pipe, img[:, 64:192].contiguous(), [207], (256, 512), seed=0).images[0]
    strip([img[:, 64:192].contiguous(), b], out / "expand.png")
    low = test_card(128, 128)
    c = editing.refine(pipe, low, [207], (256, 256), seed=0).images[0]
    strip([low, c], out / "refine.png")
    save_png(pipe.generate([207], "256-10", seed=0).images[0], out / "generate.png")
    print(f"examples: wrote {out}/inpaint.png, expand.png, refine.png, generate.png ({pipe.source})")


if __name__ == "__main__":
    main()
