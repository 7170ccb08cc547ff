"""Model configurations: one dataclass per network, with named presets.

The transformer sizes follow the release (width 64 * depth, head dim 64); the
tokenizer is LlamaGen's VQ-16 network with FlexVAR's 8912-entry codebook.
Small presets exist for tests and for the embedded default of the CLI.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .errors import ConfigError


@dataclass(frozen=True)
class FlexVARConfig:
    """The scale-wise transformer. `width` is C, `heads` is H (head dim C // H)."""

    depth: int
    width: int
    heads: int
    vocab_size: int = 8912
    code_dim: int = 32
    num_classes: int = 1000
    pos_grid: int = 32  # side of the learnable position grid pos_1LC
    mlp_hidden: int = 0  # 0 means 4 * width
    norm_eps: float = 1e-6

    def __post_init__(self):
        if self.depth < 1 or self.width < 1 or self.heads < 1:
            raise ConfigError(f"depth, width and heads must be positive, got {self}")
        if self.width % self.heads:
            raise ConfigError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.mlp_hidden == 0:
            object.__setattr__(self, "mlp_hidden", 4 * self.width)

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def null_class(self) -> int:
        """The label of the unconditional half of classifier-free guidance."""
        return self.num_classes

    @classmethod
    def from_name(cls, name: str) -> "FlexVARConfig":
        if name not in TRANSFORMER_PRESETS:
            raise ConfigError(f"unknown transformer preset {name!r}; known: {', '.join(TRANSFORMER_PRESETS)}")
        return cls(**TRANSFORMER_PRESETS[name])

    def to_dict(self) -> dict:
        return asdict(self)


def _release(depth: int) -> dict:
    return dict(depth=depth, width=64 * depth, heads=depth)


TRANSFORMER_PRESETS: dict[str, dict] = {
    "d16": _release(16),
    "d20": _release(20),
    "d24": _release(24),
    "d30": _release(30),
    # small architectures for tests and the embedded default (random weights)
    "tiny": dict(depth=2, width=128, heads=2),
    "test": dict(depth=2, width=64, heads=2, vocab_size=512, code_dim=8, num_classes=10),
}


@dataclass(frozen=True)
class VQVAEConfig:
    """The VQ-16 tokenizer: five levels, total stride 16."""

    base_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    encoder_res_blocks: int = 2
    decoder_res_blocks: int = 3
    z_channels: int = 256
    codebook_size: int = 8912
    code_dim: int = 32
    # which encoder/decoder levels carry attention blocks (level index as stored)
    encoder_attn_levels: tuple[int, ...] = field(default=(4,))
    decoder_attn_levels: tuple[int, ...] = field(default=(0,))

    def __post_init__(self):
        for m in self.channel_mult:
            if (self.base_channels * m) % 32:
                raise ConfigError("tokenizer channels must be multiples of 32 (GroupNorm with 32 groups)")

    @property
    def stride(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @classmethod
    def from_name(cls, name: str) -> "VQVAEConfig":
        if name not in TOKENIZER_PRESETS:
            raise ConfigError(f"unknown tokenizer preset {name!r}; known: {', '.join(TOKENIZER_PRESETS)}")
        return cls(**TOKENIZER_PRESETS[name])

    def to_dict(self) -> dict:
        return asdict(self)


TOKENIZER_PRESETS: dict[str, dict] = {
    "vq16": {},
    "tiny": dict(base_channels=32, z_channels=64),
    "test": dict(base_channels=32, z_channels=32, codebook_size=512, code_dim=8,
                 encoder_res_blocks=1, decoder_res_blocks=1),
}
