"""The VQ-16 tokenizer (LlamaGen's network, FlexVAR's codebook) as plain modules.

Parameter names match the release's `FlexVAE.pth` so it loads unchanged.
Images are (B, 3, H, W) in [-1, 1]; codes are (B, h, w) int64 with h = H / 16.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import VQVAEConfig


def group_norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, c, eps=1e-6, affine=True)


def norm_silu(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """silu(norm(x)); a norm module with a fused `forward_silu` (the fast runtime's) computes both at once."""
    fused = getattr(norm, "forward_silu", None)
    return fused(x) if fused is not None else F.silu(norm(x))


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = group_norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = group_norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        return self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(norm_silu(self.norm1, x))
        return self.skip(x) + self.conv2(norm_silu(self.norm2, h))


def spatial_attention(q_BNC: torch.Tensor, k_BNC: torch.Tensor, v_BNC: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(C)) v over the N positions, one head: (B, N, C)."""
    return F.scaled_dot_product_attention(q_BNC[:, None], k_BNC[:, None], v_BNC[:, None])[:, 0]


class AttnBlock(nn.Module):
    """Single-head spatial self-attention over the h*w positions, scale 1/sqrt(c). `attend` computes the
    attention itself (`spatial_attention`); a copy may set another function of the same definition."""

    attend = staticmethod(spatial_attention)

    def __init__(self, c: int):
        super().__init__()
        self.norm = group_norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def branch(self, h: torch.Tensor) -> torch.Tensor:
        """The residual branch after the norm: h = norm(x), (B, C, H, W)."""
        B, C, H, W = h.shape
        q, k, v = (m(h).flatten(2).transpose(1, 2) for m in (self.q, self.k, self.v))  # (B, HW, C)
        o = self.attend(q, k, v)
        return self.proj_out(o.transpose(1, 2).reshape(B, C, H, W))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(self.norm(x))


class Downsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: ResNet blocks, each optionally followed by attention, then a resample."""

    def __init__(self, cin: int, cout: int, n_res: int, attn: bool, resample: str | None):
        super().__init__()
        self.res = nn.ModuleList(ResBlock(cin if i == 0 else cout, cout) for i in range(n_res))
        self.attn = nn.ModuleList(AttnBlock(cout) for _ in range(n_res)) if attn else nn.ModuleList()
        if resample == "down":
            self.downsample = Downsample(cout)
        elif resample == "up":
            self.upsample = Upsample(cout)

    def sequence(self) -> list[nn.Module]:
        """The modules in the order they run."""
        seq = []
        for i, r in enumerate(self.res):
            seq += [r, self.attn[i]] if len(self.attn) else [r]
        return seq + [getattr(self, n) for n in ("downsample", "upsample") if hasattr(self, n)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.sequence():
            x = m(x)
        return x


def _middle(c: int) -> nn.ModuleList:
    return nn.ModuleList([ResBlock(c, c), AttnBlock(c), ResBlock(c, c)])


class Encoder(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        ch, mult, n = cfg.base_channels, cfg.channel_mult, len(cfg.channel_mult)
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        cins = (1,) + tuple(mult)
        self.conv_blocks = nn.ModuleList(
            Level(ch * cins[i], ch * mult[i], cfg.encoder_res_blocks, i in cfg.encoder_attn_levels,
                  "down" if i < n - 1 else None)
            for i in range(n))
        top = ch * mult[-1]
        self.mid = _middle(top)
        self.norm_out = group_norm(top)
        self.conv_out = nn.Conv2d(top, cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.conv_blocks:
            h = level(h)
        for m in self.mid:
            h = m(h)
        return self.conv_out(norm_silu(self.norm_out, h))


class Decoder(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        ch, mult, n = cfg.base_channels, tuple(reversed(cfg.channel_mult)), len(cfg.channel_mult)
        top = ch * mult[0]
        self.conv_in = nn.Conv2d(cfg.z_channels, top, 3, padding=1)
        self.mid = _middle(top)
        couts = [ch * m for m in mult]
        cins = [top] + couts[:-1]
        self.conv_blocks = nn.ModuleList(
            Level(cins[i], couts[i], cfg.decoder_res_blocks, i in cfg.decoder_attn_levels,
                  "up" if i < n - 1 else None)
            for i in range(n))
        self.norm_out = group_norm(couts[-1])
        self.conv_out = nn.Conv2d(couts[-1], 3, 3, padding=1)

    def sequence(self) -> list[nn.Module]:
        """The modules between conv_in and norm_out, in the order they run."""
        return [*self.mid, *(m for level in self.conv_blocks for m in level.sequence())]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for m in self.sequence():
            h = m(h)
        return self.conv_out(norm_silu(self.norm_out, h))


class Codebook(nn.Module):
    """L2-normalised codebook: a vector's code is the row of largest cosine similarity."""

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        self.embedding = nn.Embedding(cfg.codebook_size, cfg.code_dim)

    def normalized(self) -> torch.Tensor:
        """(V, Cvae) unit rows."""
        return F.normalize(self.embedding.weight, dim=-1)

    def quantize(self, z_BChw: torch.Tensor) -> torch.Tensor:
        """Nearest normalised row of each normalised vector: (B, Cvae, h, w) -> (B, h, w)."""
        z = F.normalize(z_BChw.permute(0, 2, 3, 1).float(), dim=-1)
        return (z @ self.normalized().float().t()).argmax(dim=-1)

    def lookup(self, idx_Bhw: torch.Tensor) -> torch.Tensor:
        """Normalised rows of the codes: (B, h, w) -> (B, Cvae, h, w)."""
        return F.embedding(idx_Bhw, self.normalized()).permute(0, 3, 1, 2)


class VQVAE(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.code_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.code_dim, cfg.z_channels, 1)
        self.quantize = Codebook(cfg)

    def encode_latent(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        """z = quant_conv(encoder(x)), x in [-1, 1]: (B, Cvae, H/16, W/16)."""
        return self.quant_conv(self.encoder(img_B3HW))

    def encode_multiscale(self, img_B3HW: torch.Tensor, steps) -> list[torch.Tensor]:
        """Codes of every step: z area-resized to each (h, w), then quantized."""
        z = self.encode_latent(img_B3HW)
        return [self.quantize.quantize(F.interpolate(z, size=hw, mode="area")) for hw in steps]

    def decode_vectors(self, vec_BChw: torch.Tensor) -> torch.Tensor:
        """Image in [-1, 1] (B, 3, 16h, 16w) from code vectors."""
        return self.decoder(self.post_quant_conv(vec_BChw))

    def decode_codes(self, idx_Bhw: torch.Tensor) -> torch.Tensor:
        return self.decode_vectors(self.quantize.lookup(idx_Bhw))

    def forward(self, idx_Bhw: torch.Tensor) -> torch.Tensor:
        return self.decode_codes(idx_Bhw)
