"""Conversions between model images ([-1, 1], B3HW float) and uint8 BHW3 arrays, and PNG files."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .errors import InputError


def to_uint8(img_B3HW: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> uint8 (B, H, W, 3) on the CPU: round((x + 1) * 127.5), clamped."""
    x = ((img_B3HW.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().contiguous()


def from_uint8(img_BHW3: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    if img_BHW3.dtype != torch.uint8 or img_BHW3.dim() != 4 or img_BHW3.shape[-1] != 3:
        raise InputError(f"images must be uint8 (B, H, W, 3), got {img_BHW3.dtype} {tuple(img_BHW3.shape)}")
    return img_BHW3.permute(0, 3, 1, 2).float() / 127.5 - 1


def save_png(img_HW3: torch.Tensor, path: str | os.PathLike) -> None:
    from PIL import Image
    Image.fromarray(img_HW3.numpy()).save(path, format="PNG")


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """An image file as uint8 (H, W, 3)."""
    from PIL import Image, UnidentifiedImageError
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such image file")
    try:
        with Image.open(p) as im:
            arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError(f"{p}: not a readable image ({type(e).__name__})") from None
    return torch.from_numpy(arr.copy())
