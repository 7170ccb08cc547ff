"""Random weights for the embedded default and for tests, and writers of the release's file formats.

The official weights cannot be fetched everywhere; a seeded random model of any preset,
saved exactly as the release saves its files, exercises every loading and compute path.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from .config import FlexVARConfig, VQVAEConfig
from .files import replaced
from .model import FlexVAR
from .vqvae import VQVAE


@torch.no_grad()
def random_transformer(cfg: FlexVARConfig, seed: int = 0, device: str | torch.device = "cpu") -> FlexVAR:
    """A FlexVAR with seeded random weights of a plausible scale (float32, eval), built on `device`."""
    with torch.device(device):
        model = FlexVAR(cfg)
    g = torch.Generator(device).manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("scale_mul_1H11"):
            p.copy_(math.log(4.0) + 0.5 * torch.randn(p.shape, generator=g, device=p.device))
        elif name in ("pos_1LC", "pos_start", "class_emb.weight"):
            p.copy_(0.5 * torch.randn(p.shape, generator=g, device=p.device))
        else:
            fan_in = p.shape[-1] if p.dim() > 1 else 64
            p.copy_(torch.randn(p.shape, generator=g, device=p.device) / math.sqrt(fan_in))
    return model.eval().requires_grad_(False)


@torch.no_grad()
def random_tokenizer(cfg: VQVAEConfig, seed: int = 0, device: str | torch.device = "cpu") -> VQVAE:
    """A VQVAE with seeded random weights whose decoded images stay mostly inside [-1, 1]."""
    with torch.device(device):
        vae = VQVAE(cfg)
    g = torch.Generator(device).manual_seed(seed)
    for name, p in vae.named_parameters():
        if p.dim() == 4:  # conv: unit-variance preserving, the output conv smaller
            fan_in = p.shape[1] * p.shape[2] * p.shape[3]
            gain = 0.3 if name == "decoder.conv_out.weight" else 1.0
            p.copy_(gain * torch.randn(p.shape, generator=g, device=p.device) / math.sqrt(fan_in))
        elif name.endswith("norm1.weight") or name.endswith("norm2.weight") or name.endswith("norm.weight") \
                or name.endswith("norm_out.weight"):
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g, device=p.device))
        else:
            p.copy_(0.1 * torch.randn(p.shape, generator=g, device=p.device))
    return vae.eval().requires_grad_(False)


def _atomic_save(obj, path: Path) -> None:
    with replaced(path) as tmp:
        torch.save(obj, tmp)


def save_release_transformer(model: FlexVAR, path: str | os.PathLike, nested: bool = True,
                             mask_tokens: int = 680) -> None:
    """Write a transformer file as the release does: nested under trainer/var_wo_ddp (or plain),
    with the training mask `attn_bias_for_masking` that loaders must drop."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["attn_bias_for_masking"] = torch.zeros(1, 1, mask_tokens, mask_tokens)
    obj = {"epoch": 0, "trainer": {"var_wo_ddp": sd}} if nested else sd
    _atomic_save(obj, Path(path))


def save_release_tokenizer(vae: VQVAE, path: str | os.PathLike) -> None:
    """Write a tokenizer file as the release does: {'model': state_dict} with `codebook_used`."""
    sd = {k: v.clone() for k, v in vae.state_dict().items()}
    sd["quantize.codebook_used"] = torch.zeros(65536)
    _atomic_save({"model": sd}, Path(path))
