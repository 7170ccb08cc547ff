"""One class per exported graph: its input/output names, dynamic axes, per-bucket shape profiles
and a sample input. Builders (ONNX, TensorRT, AOTInductor) read this contract; nothing else knows
tensor names.

Transformer step (one schedule step, the batch already doubled for guidance):
    inputs   x (B, l, C) float32        the step's input tokens
             blocks (depth, B, 6, C)    every block's modulation (per generation)
             head (B, 2, C)             the head's modulation
             past_k_i, past_v_i (P, B, H, d) for each layer i: the first P cached keys/values,
                                        a contiguous prefix of the runtime's token-major KV cache
    outputs  logits (B, l, V) float32, k_i, v_i (l, B, H, d): the step's keys/values, which the
             runtime writes into its cache at [P, P + l)
Decoder: codes (B, h, w) int64 -> image (B, 16h, 16w, 3) uint8.
Encoder: image (B, H, W, 3) uint8 -> latent (B, Cvae, H/16, W/16) float32 (image-to-image).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from flexvar.fast import FastRuntime, finish_step, head_input, qkv_step
from flexvar.images import from_uint8, pixels_uint8
from flexvar.model import FlexVAR
from flexvar.vqvae import VQVAE


@dataclass(frozen=True)
class Bucket:
    """Steps whose token count lies in (min_tokens - 1, max_tokens] share an optimization profile."""

    name: str
    min_tokens: int
    max_tokens: int

    @property
    def opt_tokens(self) -> int:
        return self.max_tokens


def make_buckets(edges=(64, 256, 1024, 4096)) -> tuple[Bucket, ...]:
    out, lo = [], 1
    for e in edges:
        out.append(Bucket(f"t{e}", lo, e))
        lo = e + 1
    return tuple(out)


BUCKETS = make_buckets()
MAX_PAST = 8192  # cached tokens an engine accepts (512 px, 15 steps needs 2534)
MAX_BATCH = 128  # rows, i.e. 64 images with guidance


def bucket_for(tokens: int, buckets=BUCKETS) -> Bucket:
    for b in buckets:
        if b.min_tokens <= tokens <= b.max_tokens:
            return b
    raise ValueError(f"a step of {tokens} tokens exceeds the largest bucket ({buckets[-1].max_tokens})")


class _StepModule(nn.Module):
    def __init__(self, model: FlexVAR):
        super().__init__()
        self.model = model
        self.weights = [FastRuntime._weights(b) for b in model.blocks]
        self.eps = model.cfg.norm_eps

    def forward(self, x, blocks, head, *past):
        depth = len(self.weights)
        new = []
        for i, (wqkv, bqkv, scale, wproj, bproj, w1, b1, w2, b2) in enumerate(self.weights):
            q, k, v = qkv_step(x, blocks[i], wqkv, bqkv, scale, self.eps)
            K = torch.cat([past[i], k], dim=0).permute(1, 2, 3, 0)  # (B, H, d, L)
            V = torch.cat([past[depth + i], v], dim=0).permute(1, 2, 0, 3)  # (B, H, L, d)
            o = torch.softmax(q.float() @ K.float(), dim=-1).to(q.dtype) @ V
            x = finish_step(x, blocks[i], o, wproj, bproj, w1, b1, w2, b2, self.eps)
            new.append((k, v))
        m = self.model
        logits = F.linear(head_input(x, head, m.head.weight, self.eps), m.head.weight, m.head.bias).float()
        return (logits, *[k for k, _ in new], *[v for _, v in new])


class TransformerStepGraph:
    """The contract of the exported transformer step."""

    name = "transformer_step"

    def __init__(self, model: FlexVAR):
        self.model, self.cfg = model, model.cfg
        d = self.cfg.depth
        self.input_names = ["x", "blocks", "head"] + [f"past_k_{i}" for i in range(d)] + [f"past_v_{i}" for i in range(d)]
        self.output_names = ["logits"] + [f"k_{i}" for i in range(d)] + [f"v_{i}" for i in range(d)]

    @property
    def dynamic_axes(self) -> dict:
        ax = {"x": {0: "batch", 1: "tokens"}, "blocks": {1: "batch"}, "head": {0: "batch"},
              "logits": {0: "batch", 1: "tokens"}}
        for i in range(self.cfg.depth):
            for n in ("past_k", "past_v"):
                ax[f"{n}_{i}"] = {0: "past", 1: "batch"}
            for n in ("k", "v"):
                ax[f"{n}_{i}"] = {0: "tokens", 1: "batch"}
        return ax

    def module(self) -> nn.Module:
        return _StepModule(self.model).eval()

    def sample_inputs(self, batch: int = 2, tokens: int = 4, past: int = 5) -> tuple:
        c, p = self.cfg, self.model.pos_1LC
        g = torch.Generator(p.device).manual_seed(0)
        x = torch.randn(batch, tokens, c.width, generator=g, device=p.device)
        blocks = torch.randn(c.depth, batch, 6, c.width, generator=g, device=p.device).to(p.dtype) * 0.1
        head = torch.randn(batch, 2, c.width, generator=g, device=p.device).to(p.dtype) * 0.1
        pasts = [torch.randn(past, batch, c.heads, c.head_dim, generator=g, device=p.device).to(p.dtype)
                 for _ in range(2 * c.depth)]
        return (x, blocks, head, *pasts)

    def profile(self, bucket: Bucket) -> dict:
        """min/opt/max shape of every dynamic input for one bucket (TensorRT optimization profiles)."""
        return step_profile(self.cfg.to_dict(), bucket)


def step_profile(model_config: dict, bucket: Bucket, max_batch: int = MAX_BATCH, max_past: int = MAX_PAST) -> dict:
    """{input: (min, opt, max)} of the transformer step for one bucket, from a model config (or a manifest's).

    Token count l spans the bucket; the batch spans 2 (one image with guidance) to max_batch rows;
    the past spans 0 (first step) to max_past tokens, optimized for 4x the bucket's largest step.
    """
    C, D, H = model_config["width"], model_config["depth"], model_config["heads"]
    d, lo, hi = C // H, bucket.min_tokens, bucket.max_tokens
    prof = {"x": ((2, lo, C), (2, hi, C), (max_batch, hi, C)),
            "blocks": ((D, 2, 6, C), (D, 2, 6, C), (D, max_batch, 6, C)),
            "head": ((2, 2, C), (2, 2, C), (max_batch, 2, C))}
    for i in range(D):
        for n in ("past_k", "past_v"):
            prof[f"{n}_{i}"] = ((0, 2, H, d), (min(max_past, 4 * hi), 2, H, d), (max_past, max_batch, H, d))
    return prof


class _DecoderModule(nn.Module):
    def __init__(self, vae: VQVAE):
        super().__init__()
        self.vae = vae

    def forward(self, codes):
        return pixels_uint8(self.vae.decode_codes(codes))


class DecoderGraph:
    """The contract of the exported tokenizer decoder: codes (B, h, w) int64 -> uint8 images."""

    name = "decoder"
    input_names = ["codes"]
    output_names = ["image"]
    dynamic_axes = {"codes": {0: "batch", 1: "h", 2: "w"}, "image": {0: "batch", 1: "height", 2: "width"}}

    def __init__(self, vae: VQVAE):
        self.vae = vae

    def module(self) -> nn.Module:
        return _DecoderModule(self.vae).eval()

    def sample_inputs(self, batch: int = 1, h: int = 2, w: int = 3) -> tuple:
        dev = self.vae.quant_conv.weight.device
        return (torch.randint(0, self.vae.cfg.codebook_size, (batch, h, w), device=dev),)

    @staticmethod
    def profile(max_batch: int = 64, max_side: int = 64) -> dict:
        """min/opt/max of the codes: up to 64 images of 64x64 tokens (1024 px)."""
        return {"codes": ((1, 1, 1), (1, 16, 16), (max_batch, max_side, max_side))}


class _EncoderModule(nn.Module):
    def __init__(self, vae: VQVAE):
        super().__init__()
        self.vae = vae

    def forward(self, image):
        x = from_uint8(image).to(self.vae.quant_conv.weight.dtype)  # as the torch path (editing.py)
        return self.vae.encode_latent(x).float()


class EncoderGraph:
    """The contract of the exported tokenizer encoder (image-to-image): uint8 images -> latents z,
    which the runtime area-resizes and quantizes per step."""

    name = "encoder"
    input_names = ["image"]
    output_names = ["latent"]
    dynamic_axes = {"image": {0: "batch", 1: "height", 2: "width"}, "latent": {0: "batch", 2: "h", 3: "w"}}

    def __init__(self, vae: VQVAE):
        self.vae = vae

    def module(self) -> nn.Module:
        return _EncoderModule(self.vae).eval()

    def sample_inputs(self, batch: int = 1, h: int = 2, w: int = 3) -> tuple:
        dev = self.vae.quant_conv.weight.device
        return (torch.randint(0, 256, (batch, 16 * h, 16 * w, 3), dtype=torch.uint8, device=dev),)

    @staticmethod
    def profile(max_batch: int = 16, max_side: int = 1024) -> dict:
        """min/opt/max of the input images: up to 16 images of 1024 px."""
        return {"image": ((1, 16, 16, 3), (1, 256, 256, 3), (max_batch, max_side, max_side, 3))}
