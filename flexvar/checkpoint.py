"""Loading the official checkpoint files (and safetensors) without running any code.

Transformer files: a plain state_dict, or one nested at ckpt['trainer']['var_wo_ddp'].
Tokenizer files: ckpt['model']. Architectures are inferred from tensor shapes.
Every failure is a `CheckpointError` with a one-line message naming the file.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import FlexVARConfig, VQVAEConfig
from .errors import CheckpointError, ConfigError
from .model import FlexVAR
from .vqvae import VQVAE

DROPPED_KEYS = ("attn_bias_for_masking", "quantize.codebook_used")  # training bookkeeping


@dataclass(frozen=True)
class CheckpointInfo:
    path: str
    kind: str  # "transformer" | "tokenizer"
    layout: str  # how the weights were stored in the file
    config: FlexVARConfig | VQVAEConfig
    num_params: int
    stored_dtype: str  # dtype of the tensors in the file


# ---- reading files ------------------------------------------------------------------
def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _inert_globals(names: list[str]) -> list[type]:
    """Stand-in classes for the non-tensor Python objects a checkpoint names (e.g. saved args).

    They accept and store whatever the pickle gives them and run nothing, so a file that
    carries metadata objects still loads under weights_only and never executes its code.
    """
    out = []
    for full in names:
        module, _, name = full.rpartition(".")
        stub = type(name, (), {"__init__": lambda self, *a, **k: None,
                               "__setstate__": lambda self, state: None})
        stub.__module__, stub.__qualname__ = module, name
        out.append(stub)
    return out


def _torch_load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass
    # metadata objects beside the weights: load them as inert stand-ins
    names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    try:
        with torch.serialization.safe_globals(_inert_globals(names)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: refused: it calls Python code ({', '.join(names)}) that weights-only "
                              "loading does not run") from None


def read_file(path: str | os.PathLike):
    """The object stored in a checkpoint file (tensors and plain containers only)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such file")
    if p.is_dir():
        raise CheckpointError(f"{p}: is a directory, expected a checkpoint file")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p}: empty file")
    try:
        if _is_safetensors(p):
            from safetensors.torch import load_file
            return load_file(str(p))
        return _torch_load(p)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure becomes one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise CheckpointError(f"{p}: not a readable checkpoint (truncated, corrupt or not PyTorch/safetensors): {first}") from None


def _unwrap(obj, path: str) -> tuple[dict, str]:
    """The state_dict inside a loaded object, and where it was found."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state_dict")
    trainer = obj.get("trainer")
    if isinstance(trainer, dict) and isinstance(trainer.get("var_wo_ddp"), dict):
        return trainer["var_wo_ddp"], "trainer/var_wo_ddp"
    if isinstance(obj.get("model"), dict):
        return obj["model"], "model"
    return obj, "state_dict"


def kind_of(sd: dict) -> str | None:
    if "class_emb.weight" in sd and "head.weight" in sd:
        return "transformer"
    if "quantize.embedding.weight" in sd and "decoder.conv_out.weight" in sd:
        return "tokenizer"
    return None


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str, str]:
    """(state_dict without training bookkeeping, kind, layout) of any supported file."""
    sd, layout = _unwrap(read_file(path), str(path))
    kind = kind_of(sd)
    if kind is None:
        raise CheckpointError(f"{path}: holds neither a FlexVAR transformer nor a tokenizer ({len(sd)} keys)")
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entry {bad[0]!r} is not a tensor")
    return {k: v for k, v in sd.items() if k not in DROPPED_KEYS}, kind, layout


# ---- inferring architectures ------------------------------------------------------------
def _count(sd: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def infer_transformer_config(sd: dict) -> FlexVARConfig:
    width, code_dim = sd["word_embed.weight"].shape
    return FlexVARConfig(
        depth=_count(sd, r"blocks\.(\d+)\."),
        width=width,
        heads=sd["blocks.0.attn.scale_mul_1H11"].shape[1],
        vocab_size=sd["head.weight"].shape[0],
        code_dim=code_dim,
        num_classes=sd["class_emb.weight"].shape[0] - 1,
        pos_grid=sd["pos_1LC"].shape[-1],
        mlp_hidden=sd["blocks.0.ffn.fc1.weight"].shape[0],
    )


def infer_tokenizer_config(sd: dict) -> VQVAEConfig:
    base = sd["encoder.conv_in.weight"].shape[0]
    n = _count(sd, r"encoder\.conv_blocks\.(\d+)\.")
    mult = tuple(sd[f"encoder.conv_blocks.{i}.res.0.conv1.weight"].shape[0] // base for i in range(n))
    V, d = sd["quantize.embedding.weight"].shape
    return VQVAEConfig(
        base_channels=base,
        channel_mult=mult,
        encoder_res_blocks=_count(sd, r"encoder\.conv_blocks\.0\.res\.(\d+)\."),
        decoder_res_blocks=_count(sd, r"decoder\.conv_blocks\.0\.res\.(\d+)\."),
        z_channels=sd["encoder.conv_out.weight"].shape[0],
        codebook_size=V,
        code_dim=d,
        encoder_attn_levels=tuple(i for i in range(n) if f"encoder.conv_blocks.{i}.attn.0.q.weight" in sd),
        decoder_attn_levels=tuple(i for i in range(n) if f"decoder.conv_blocks.{i}.attn.0.q.weight" in sd),
    )


def _build(module_cls, cfg, sd: dict, path: str) -> torch.nn.Module:
    with torch.device("meta"):
        module = module_cls(cfg)
    want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = [k for k in want if k not in sd]
    extra = [k for k in sd if k not in want]
    if missing or extra:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}"
        raise CheckpointError(f"{path}: keys do not match the inferred architecture "
                              f"({len(missing)} missing, {len(extra)} unexpected; {what})")
    for k, shape in want.items():
        if tuple(sd[k].shape) != shape:
            raise CheckpointError(f"{path}: {k} has shape {tuple(sd[k].shape)}, expected {shape}")
    module.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True, assign=True)
    return module.eval().requires_grad_(False)


def _load(path, expected: str | None):
    """(module, info) of a file; `expected` kind, or None for whichever it is."""
    sd, kind, layout = read_state_dict(path)
    if expected is not None and kind != expected:
        raise CheckpointError(f"{path}: is a {kind} checkpoint, expected a {expected}")
    try:
        if kind == "transformer":
            cfg = infer_transformer_config(sd)
            module = _build(FlexVAR, cfg, sd, str(path))
        else:
            cfg = infer_tokenizer_config(sd)
            module = _build(VQVAE, cfg, sd, str(path))
    except (KeyError, IndexError, ConfigError) as e:
        raise CheckpointError(f"{path}: incomplete {kind} checkpoint ({type(e).__name__}: {e})") from None
    n = sum(p.numel() for p in module.parameters())
    dtype = str(next(iter(sd.values())).dtype).removeprefix("torch.")
    return module, CheckpointInfo(str(path), kind, layout, cfg, n, dtype)


def load_transformer(path: str | os.PathLike) -> tuple[FlexVAR, CheckpointInfo]:
    """The transformer in a release file (float32, CPU, eval mode)."""
    return _load(path, "transformer")


def load_tokenizer(path: str | os.PathLike) -> tuple[VQVAE, CheckpointInfo]:
    """The VQ-VAE in a release file (float32, CPU, eval mode)."""
    return _load(path, "tokenizer")


def check_pair(var_cfg: FlexVARConfig, vae_cfg: VQVAEConfig) -> None:
    """The transformer predicts codes of this tokenizer's codebook, embedded from its vectors."""
    if var_cfg.vocab_size != vae_cfg.codebook_size or var_cfg.code_dim != vae_cfg.code_dim:
        raise CheckpointError(
            f"tokenizer codebook ({vae_cfg.codebook_size} codes x {vae_cfg.code_dim}) does not match the "
            f"transformer ({var_cfg.vocab_size} codes x {var_cfg.code_dim})")


def describe(path: str | os.PathLike) -> str:
    """A few lines saying what a checkpoint file is."""
    _, info = _load(path, None)
    c = info.config
    lines = [f"file:       {path}", f"kind:       {info.kind} (stored at {info.layout})",
             f"parameters: {info.num_params / 1e6:.1f}M", f"dtype:      {info.stored_dtype}"]
    if info.kind == "transformer":
        lines += [f"depth:      {c.depth}  width: {c.width}  heads: {c.heads}",
                  f"vocabulary: {c.vocab_size} codes of dim {c.code_dim}; classes: {c.num_classes}",
                  f"positions:  {c.pos_grid}x{c.pos_grid} grid"]
    else:
        lines += [f"channels:   {c.base_channels} x {c.channel_mult}; z {c.z_channels}",
                  f"codebook:   {c.codebook_size} codes of dim {c.code_dim}; stride {c.stride}"]
    return "\n".join(lines)


def fingerprint(path: str | os.PathLike) -> str:
    """sha256 of the file's bytes (first 16 hex digits): names artifacts built from it."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:16]
