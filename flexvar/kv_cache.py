"""A caller-owned key/value cache, preallocated for a whole schedule.

The total token count of a schedule is known before the first step, so the
cache is allocated once and written by index; it is never grown.
"""
from __future__ import annotations

import torch


class KVCache:
    """Keys and values of every layer.

    token_major=True (default): shape (depth, 2, L_max, B, H, d). Tokens are the outer
    dimension, so the first L tokens of a layer, `kv[layer, 0, :L]`, are one contiguous
    (L, B, H, d) block that an engine can read in place.
    token_major=False: (depth, 2, B, L_max, H, d), the (batch, seq, head, dim) layout that
    flash attention reads natively.
    head_major=True (with token_major): `kv` is the same (depth, 2, L_max, B, H, d) tensor, a view of
    storage laid out (depth, 2, B, H, L_max, d), so that one (image, head)'s keys are one contiguous run
    (a prefix is then no longer one block: for the torch runtime's strided kernels, not for engines).
    The cache keeps no length: callers pass the position of the step they write, which keeps
    a step free of host state (and so capturable in a CUDA graph).
    """

    def __init__(self, depth: int, max_tokens: int, batch: int, heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu", token_major: bool = True,
                 head_major: bool = False):
        if head_major and not token_major:
            raise ValueError("head_major is a storage order of the token-major cache")
        self.token_major, self.head_major = token_major, head_major
        if head_major:
            self.kv = torch.empty(depth, 2, batch, heads, max_tokens, head_dim, dtype=dtype,
                                  device=device).permute(0, 1, 4, 2, 3, 5)
        else:
            inner = (max_tokens, batch) if token_major else (batch, max_tokens)
            self.kv = torch.empty(depth, 2, *inner, heads, head_dim, dtype=dtype, device=device)
        self.max_tokens, self.batch = max_tokens, batch

    def update_(self, layer: int, start: int, k_BlHd: torch.Tensor, v_BlHd: torch.Tensor) -> None:
        """Write the keys/values (B, l, H, d) of tokens [start, start + l) of `layer`."""
        end = start + k_BlHd.shape[1]
        if end > self.max_tokens:
            raise IndexError(f"KV cache holds {self.max_tokens} tokens, step writes up to {end}")
        if self.token_major:
            self.kv[layer, 0, start:end] = k_BlHd.transpose(0, 1)
            self.kv[layer, 1, start:end] = v_BlHd.transpose(0, 1)
        else:
            self.kv[layer, 0, :, start:end] = k_BlHd
            self.kv[layer, 1, :, start:end] = v_BlHd

    def attention_kv(self, layer: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views (B, H, end, d) of the first `end` keys and values, for attention."""
        if self.token_major:
            return self.kv[layer, 0, :end].permute(1, 2, 0, 3), self.kv[layer, 1, :end].permute(1, 2, 0, 3)
        return self.kv[layer, 0, :, :end].transpose(1, 2), self.kv[layer, 1, :, :end].transpose(1, 2)

    def keys(self, layer: int, end: int) -> torch.Tensor:
        """The first `end` keys of `layer` in storage layout ((end, B, H, d), contiguous, when token-major and not
        head-major)."""
        return self.kv[layer, 0, :end] if self.token_major else self.kv[layer, 0, :, :end]

    def values(self, layer: int, end: int) -> torch.Tensor:
        return self.kv[layer, 1, :end] if self.token_major else self.kv[layer, 1, :, :end]


def head_major_copy(x_LBHd: torch.Tensor) -> torch.Tensor:
    """A copy of one layer's keys or values x (L, B, H, d) laid out in memory as `KVCache(head_major=True)` lays
    them out ((B, H, L, d): each (image, head)'s tokens adjacent), seen with x's shape."""
    return x_LBHd.permute(1, 2, 0, 3).contiguous().permute(2, 0, 1, 3)
