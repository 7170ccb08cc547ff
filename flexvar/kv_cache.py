"""A caller-owned key/value cache, preallocated for a whole schedule.

The total token count of a schedule is known before the first step, so the
cache is allocated once and written by index; it is never grown.
"""
from __future__ import annotations

import torch


class KVCache:
    """Keys and values of every layer, shape (depth, 2, L_max, B, H, d).

    Tokens are the outer dimension so that the first L tokens of one layer,
    `kv[layer, 0, :L]`, are one contiguous (L, B, H, d) block: an engine can
    read that prefix in place. The cache keeps no length: callers pass the
    position of the step they write, which keeps a step's work free of host
    state (and so capturable in a CUDA graph).
    """

    def __init__(self, depth: int, max_tokens: int, batch: int, heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        self.kv = torch.empty(depth, 2, max_tokens, batch, heads, head_dim, dtype=dtype, device=device)

    @property
    def max_tokens(self) -> int:
        return self.kv.shape[2]

    @property
    def batch(self) -> int:
        return self.kv.shape[3]

    def update_(self, layer: int, start: int, k_lBHd: torch.Tensor, v_lBHd: torch.Tensor) -> None:
        """Write the keys/values of tokens [start, start + l) of `layer`."""
        end = start + k_lBHd.shape[0]
        if end > self.max_tokens:
            raise IndexError(f"KV cache holds {self.max_tokens} tokens, step writes up to {end}")
        self.kv[layer, 0, start:end] = k_lBHd
        self.kv[layer, 1, start:end] = v_lBHd

    def keys(self, layer: int, end: int) -> torch.Tensor:
        """The first `end` keys of `layer`: a contiguous (end, B, H, d) view."""
        return self.kv[layer, 0, :end]

    def values(self, layer: int, end: int) -> torch.Tensor:
        return self.kv[layer, 1, :end]
