"""The FlexVAR transformer as plain modules (no sampling loop, no hidden state).

Parameter names match the release's state_dict so its checkpoints load unchanged.
Two forward paths:
  * `forward_step`: one step's tokens against a caller-owned `KVCache` (inference);
  * `forward`: the whole sequence with a block-causal mask (the obviously-correct oracle).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import FlexVARConfig
from .kv_cache import KVCache


def layer_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm without affine parameters."""
    return F.layer_norm(x, x.shape[-1:], eps=eps)


class SelfAttention(nn.Module):
    """Attention with L2-normalised q and k, a learned per-head scale on q, and softmax scale 1."""

    def __init__(self, cfg: FlexVARConfig):
        super().__init__()
        C, self.H, self.d = cfg.width, cfg.heads, cfg.head_dim
        self.mat_qkv = nn.Linear(C, 3 * C, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(C))
        self.v_bias = nn.Parameter(torch.zeros(C))
        self.register_buffer("zero_k_bias", torch.zeros(C))
        self.scale_mul_1H11 = nn.Parameter(torch.full((1, self.H, 1, 1), math.log(4.0)))
        self.proj = nn.Linear(C, C)
        self.max_log_scale = math.log(100.0)

    def qkv(self, x_BlC: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q as (B, H, l, d), already normalised and scaled; k (normalised) and v as (B, l, H, d)."""
        B, l, _ = x_BlC.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = F.linear(x_BlC, self.mat_qkv.weight, bias).view(B, l, 3, self.H, self.d)
        q, k, v = qkv.unbind(2)  # each (B, l, H, d)
        scale_H = self.scale_mul_1H11.clamp_max(self.max_log_scale).exp().view(self.H, 1)
        q = F.normalize(q, dim=-1).mul(scale_H).transpose(1, 2)
        return q, F.normalize(k, dim=-1), v

    def attend(self, q_BHld: torch.Tensor, k_BHLd: torch.Tensor, v_BHLd: torch.Tensor,
               mask_lL: torch.Tensor | None = None) -> torch.Tensor:
        """softmax(q k^T) v over all L keys (optionally masked), back to (B, l, C) through proj."""
        o = F.scaled_dot_product_attention(q_BHld, k_BHLd, v_BHLd, attn_mask=mask_lL, scale=1.0)
        B, _, l, _ = o.shape
        return self.proj(o.transpose(1, 2).reshape(B, l, self.H * self.d))


class FFN(nn.Module):
    def __init__(self, cfg: FlexVARConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.width, cfg.mlp_hidden)
        self.fc2 = nn.Linear(cfg.mlp_hidden, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    """x += attn(LN(x)(1+scale1)+shift1)*gamma1; x += ffn(LN(x)(1+scale2)+shift2)*gamma2."""

    def __init__(self, cfg: FlexVARConfig):
        super().__init__()
        self.eps = cfg.norm_eps
        self.attn = SelfAttention(cfg)
        self.ffn = FFN(cfg)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(cfg.width, 6 * cfg.width))

    def modulation(self, cond_BD: torch.Tensor) -> torch.Tensor:
        """(B, 6, C): gamma1, gamma2, scale1, scale2, shift1, shift2, in that order."""
        return self.ada_lin(cond_BD).view(cond_BD.shape[0], 6, -1)

    def _mlp_half(self, x: torch.Tensor, mod_B6C: torch.Tensor) -> torch.Tensor:
        g2, s2, b2 = mod_B6C[:, 1:2], mod_B6C[:, 3:4], mod_B6C[:, 5:6]
        return x + self.ffn(layer_norm(x, self.eps) * (1 + s2) + b2) * g2

    def _attn_input(self, x: torch.Tensor, mod_B6C: torch.Tensor) -> torch.Tensor:
        s1, b1 = mod_B6C[:, 2:3], mod_B6C[:, 4:5]
        return layer_norm(x, self.eps) * (1 + s1) + b1

    def forward_step(self, x_BlC: torch.Tensor, mod_B6C: torch.Tensor, cache: KVCache,
                     layer: int, start: int) -> torch.Tensor:
        """One step's l tokens at positions [start, start + l): write their k/v, attend to all <= them."""
        q, k, v = self.attn.qkv(self._attn_input(x_BlC, mod_B6C))
        cache.update_(layer, start, k, v)
        a = self.attn.attend(q, *cache.attention_kv(layer, start + x_BlC.shape[1]))
        return self._mlp_half(x_BlC + a * mod_B6C[:, 0:1], mod_B6C)

    def forward(self, x_BLC: torch.Tensor, mod_B6C: torch.Tensor, mask_LL: torch.Tensor) -> torch.Tensor:
        q, k, v = self.attn.qkv(self._attn_input(x_BLC, mod_B6C))
        a = self.attn.attend(q, k.transpose(1, 2), v.transpose(1, 2), mask_LL)
        return self._mlp_half(x_BLC + a * mod_B6C[:, 0:1], mod_B6C)


class FlexVAR(nn.Module):
    """The class-conditional scale-wise transformer. Token preparation lives here too
    (`first_tokens`, `next_tokens`) since it uses the model's own embeddings."""

    def __init__(self, cfg: FlexVARConfig):
        super().__init__()
        self.cfg = cfg
        C, G = cfg.width, cfg.pos_grid
        self.pos_start = nn.Parameter(torch.zeros(1, 1, C))
        self.pos_1LC = nn.Parameter(torch.zeros(1, C, G, G))
        self.word_embed = nn.Linear(cfg.code_dim, C)
        self.class_emb = nn.Embedding(cfg.num_classes + 1, C)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.head_nm = nn.Module()
        self.head_nm.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, 2 * C))
        self.head = nn.Linear(C, cfg.vocab_size)

    # ---- per generation -----------------------------------------------------------
    def modulation(self, labels_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """cond (B, C), every block's modulation (depth, B, 6, C) and the head's (B, 2, C).

        These depend on the labels only, so a generation computes them once.
        """
        cond_BC = self.class_emb(labels_B)
        blocks = torch.stack([b.modulation(cond_BC) for b in self.blocks])
        head = self.head_nm.ada_lin(cond_BC).view(cond_BC.shape[0], 2, -1)
        return cond_BC, blocks, head

    # ---- tokens of a step -----------------------------------------------------------
    def positions(self, h: int, w: int) -> torch.Tensor:
        """pos_1LC area-resized to (h, w), flattened row-major: (h*w, C)."""
        return F.interpolate(self.pos_1LC, size=(h, w), mode="area")[0].flatten(1).transpose(0, 1)

    def first_tokens(self, cond_BC: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Step 1: cond + pos_start + pos(h, w) for every token: (B, h*w, C)."""
        return cond_BC[:, None] + self.pos_start + self.positions(h, w)[None]

    def next_tokens(self, vec_BChw: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Later steps: code vectors bicubic-resized to (h, w), word_embed, plus pos(h, w): (B, h*w, C)."""
        up = F.interpolate(vec_BChw, size=(h, w), mode="bicubic", align_corners=False)
        return self.word_embed(up.flatten(2).transpose(1, 2)) + self.positions(h, w)[None]

    # ---- transformer ------------------------------------------------------------------
    def logits(self, x_BlC: torch.Tensor, head_B2C: torch.Tensor) -> torch.Tensor:
        """head(LN(x)(1+scale)+shift), in float32: (B, l, V)."""
        x = layer_norm(x_BlC.float(), self.cfg.norm_eps)
        x = x * (1 + head_B2C[:, 0:1].float()) + head_B2C[:, 1:2].float()
        return F.linear(x, self.head.weight.float(), self.head.bias.float())

    def forward_step(self, x_BlC: torch.Tensor, blocks_DB6C: torch.Tensor, head_B2C: torch.Tensor,
                     cache: KVCache, start: int) -> torch.Tensor:
        """Logits (B, l, V) of one step whose tokens sit at [start, start + l)."""
        for i, blk in enumerate(self.blocks):
            x_BlC = blk.forward_step(x_BlC, blocks_DB6C[i], cache, i, start)
        return self.logits(x_BlC, head_B2C)

    def forward(self, x_BLC: torch.Tensor, labels_B: torch.Tensor, token_counts: list[int]) -> torch.Tensor:
        """Full-sequence logits (B, L, V) with the block-causal mask of `token_counts`."""
        _, blocks, head = self.modulation(labels_B)
        mask = block_causal_mask(token_counts, x_BLC.device)
        for i, blk in enumerate(self.blocks):
            x_BLC = blk(x_BLC, blocks[i], mask)
        return self.logits(x_BLC, head)


def block_causal_mask(token_counts: list[int], device=None) -> torch.Tensor:
    """(L, L) bool, True where query i may attend key j: j's step is not later than i's."""
    step = torch.repeat_interleave(torch.arange(len(token_counts), device=device),
                                   torch.tensor(token_counts, device=device))
    return step[None, :] <= step[:, None]
