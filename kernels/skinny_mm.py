"""Split-K partial products for GEMMs of few rows (`skinny_partials`), one Triton kernel.

At batch 1's middle steps (18-128 token rows) cuBLAS runs a block's projection and fc2 on few thread
blocks per weight (a d16 fc2, 8 MiB, at ~0.95 TB/s; `bench/gpu/skinny_probe.py`). Here the weight is the
MMA's M side: one program per (BLOCK_N output columns, K split) streams its slice of the weight once,
through pipelined loads, against all rows (BLOCK_R >= rows; the activations come from L2), and writes
float32 partial products (S, R, N), so that enough programs stream the weight at once. The consumer
sums the S partials: in the fast runtime, the compiled kernel that already reads the GEMM's output
(residual update + LayerNorm), so the sum costs no pass of its own.

`skinny_partials_ref` is the definition (the product of each K split in float32); the op
`flexvar::skinny_partials` runs the kernel on CUDA for fp16/bf16 operands when Triton is installed,
the reference otherwise. It is opaque to torch.compile (a registered op with a fake implementation).
"""
from __future__ import annotations

import torch

from . import _lib

try:  # CPU builds of torch come without Triton
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

BLOCK_N, BLOCK_K, STAGES, MAX_ROWS = 64, 128, 4, 128

_lib.define("skinny_partials(Tensor x, Tensor w, int splits) -> Tensor")


def skinny_partials_ref(x: torch.Tensor, w: torch.Tensor, splits: int) -> torch.Tensor:
    """float32 (splits, R, N): x (R, K) @ w (N, K)^T over each of `splits` equal K ranges."""
    R, K = x.shape
    xs = x.float().view(R, splits, K // splits).transpose(0, 1)  # (S, R, K / S)
    ws = w.float().view(w.shape[0], splits, K // splits).transpose(0, 1)  # (S, N, K / S)
    return torch.bmm(xs, ws.transpose(1, 2))


def splits_for(N: int, K: int, programs: int = 128) -> int:
    """K splits of a (N, K) weight: the fewest that give at least `programs` programs (64 columns each),
    among those that divide K into BLOCK_K multiples; 0 where K or N does not tile."""
    if N % BLOCK_N or K % BLOCK_K:
        return 0
    blocks = K // BLOCK_K
    fits = [s for s in range(1, blocks + 1) if blocks % s == 0]
    return next((s for s in fits if N // BLOCK_N * s >= programs), fits[-1])


def kernel_available(x: torch.Tensor, w: torch.Tensor, splits: int) -> bool:
    """Whether the op runs the Triton kernel for x (R, K) and w (N, K)."""
    if triton is None or not x.is_cuda or x.dtype not in (torch.float16, torch.bfloat16) or w.dtype != x.dtype:
        return False
    R, K = x.shape
    N = w.shape[0]
    return (0 < R <= MAX_ROWS and splits > 0 and N % BLOCK_N == 0 and K % (splits * BLOCK_K) == 0
            and w.stride(1) == 1)


@torch.library.impl(_lib, "skinny_partials", "CPU")
def _skinny_partials_cpu(x, w, splits):
    return skinny_partials_ref(x, w, splits)


@torch.library.impl(_lib, "skinny_partials", "CUDA")
def _skinny_partials_cuda(x, w, splits):
    if not kernel_available(x, w, splits):
        return skinny_partials_ref(x, w, splits)
    x = x.contiguous()
    R, K = x.shape
    N = w.shape[0]
    p = torch.empty(splits, R, N, device=x.device, dtype=torch.float32)
    _skinny_kernel[(N // BLOCK_N, splits)](x, w, p, R, K // splits, x.stride(0), w.stride(0), p.stride(0), p.stride(1),
                                           BLOCK_R=max(16, triton.next_power_of_2(R)), BLOCK_N=BLOCK_N,
                                           BLOCK_K=BLOCK_K, STAGES=STAGES, num_warps=4)
    return p


@torch.library.register_fake("flexvar::skinny_partials")
def _skinny_partials_fake(x, w, splits):
    return x.new_empty((splits, x.shape[0], w.shape[0]), dtype=torch.float32)


def skinny_partials(x: torch.Tensor, w: torch.Tensor, splits: int) -> torch.Tensor:
    """The op: the Triton kernel where `kernel_available`, else `skinny_partials_ref`."""
    return torch.ops.flexvar.skinny_partials(x, w, int(splits))


if triton is not None:
    @triton.jit
    def _skinny_kernel(X, W, P, R, k_split, sxr, swn, sps, spr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_K: tl.constexpr, STAGES: tl.constexpr):
        pid_n = tl.program_id(0)
        pid_s = tl.program_id(1)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rr = tl.arange(0, BLOCK_R)
        acc = tl.zeros([BLOCK_N, BLOCK_R], tl.float32)
        k0 = pid_s * k_split
        for k in tl.range(k0, k0 + k_split, BLOCK_K, num_stages=STAGES):
            rk = k + tl.arange(0, BLOCK_K)
            w = tl.load(W + rn[:, None] * swn + rk[None, :])  # (BLOCK_N, BLOCK_K): each weight byte once
            x = tl.load(X + rr[None, :] * sxr + rk[:, None], mask=rr[None, :] < R, other=0.0)  # (BLOCK_K, BLOCK_R)
            acc = tl.dot(w, x, acc)
        tl.store(P + pid_s * sps + rr[None, :] * spr + rn[:, None], acc, mask=rr[None, :] < R)
