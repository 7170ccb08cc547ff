"""Conversions between model images ([-1, 1], B3HW float) and uint8 BHW3 arrays, and PNG files."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .errors import InputError


def pixels_uint8(img_B3HW: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> uint8 (B, H, W, 3) view on the input's device: round((x + 1) * 127.5), clamped.
    Plain tensor ops: also what the exported decoder graphs and the fast runtime's decode compute."""
    return ((img_B3HW.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def to_uint8(img_B3HW: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> contiguous uint8 (B, H, W, 3) on the CPU."""
    return pixels_uint8(img_B3HW).cpu().contiguous()


def from_uint8(img_BHW3: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
    if img_BHW3.dtype != torch.uint8 or img_BHW3.dim() != 4 or img_BHW3.shape[-1] != 3:
        raise InputError(f"images must be uint8 (B, H, W, 3), got {img_BHW3.dtype} {tuple(img_BHW3.shape)}")
    return img_BHW3.permute(0, 3, 1, 2).float() / 127.5 - 1


def save_png(img_HW3: torch.Tensor, path: str | os.PathLike) -> None:
    from PIL import Image
    Image.fromarray(img_HW3.numpy()).save(path, format="PNG")


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """An image file as uint8 (H, W, 3). 16-bit greyscale images are scaled to 8 bits (PIL's RGB conversion would
    clip them to white above 255); floating-point images are refused (their range is not known)."""
    from PIL import Image, UnidentifiedImageError
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such image file")
    try:
        with Image.open(p) as im:
            if im.mode == "F":
                raise InputError(f"{p}: a floating-point image; save it with 8 or 16 bits per channel")
            if im.mode.startswith("I"):  # I;16, I;16B, I;16L, I: integer greyscale
                grey = np.asarray(im).astype(np.int64)
                if grey.min() < 0 or grey.max() > 65535:
                    raise InputError(f"{p}: integer image values outside 0-65535")
                if im.mode != "I" or grey.max() > 255:  # 16-bit: 0-65535 onto 0-255
                    grey = (grey * 255 + 32767) // 65535
                arr = np.repeat(grey.astype(np.uint8)[..., None], 3, axis=-1)
            else:
                arr = np.asarray(im.convert("RGB"))
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError(f"{p}: not a readable image ({type(e).__name__})") from None
    return torch.from_numpy(arr.copy())


def load_mask(path: str | os.PathLike) -> torch.Tensor:
    """A mask image as bool (H, W): True (white, > 127 in grey) marks what to generate."""
    img = load_image(path)
    return img.float().mean(-1) > 127


def resize_image(img: torch.Tensor, size: tuple[int, int], nearest: bool = False) -> torch.Tensor:
    """Resize a uint8 (H, W, 3) image (bicubic, antialiased) or a bool (H, W) mask (nearest)."""
    if tuple(img.shape[:2]) == tuple(size):
        return img
    if nearest:
        return torch.nn.functional.interpolate(img.float()[None, None], size=size, mode="nearest")[0, 0] > 0.5
    x = img.permute(2, 0, 1)[None].float()
    x = torch.nn.functional.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
    return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8)


def resize_to_tokens(img: torch.Tensor, patch: int = 16) -> torch.Tensor:
    """Resize so both sides are multiples of `patch` (nearest multiple, at least one patch)."""
    H, W = img.shape[:2]
    size = (max(patch, round(H / patch) * patch), max(patch, round(W / patch) * patch))
    return resize_image(img, size)
