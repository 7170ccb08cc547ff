"""Weights prefetched into L2 ahead of the GEMMs that read them (`l2_prefetch`), one Triton kernel.

At batch 1 a block's GEMMs are latency-bound (18-200 token rows): each streams its weight from device
memory while most of the H100 waits. With the weights a few GEMMs ahead already in L2 (50 MB), that
wait shrinks (`bench/gpu/l2_probe.py`: d16's four block GEMMs at 18-128 rows, 26-27 us per block cold,
20-23 us with the weights in L2). The fast runtime launches this kernel on a second stream (a branch
of its CUDA graph) at fixed points of a step, over the weights of the next GEMMs.

The weights are cut into chunks of at most `CHUNK` bytes once (`chunk_table`); each lane of the kernel
issues one `cp.async.bulk.prefetch.L2.global` (sm_90) for one chunk, so the requests are spread over
many SMs (one SM's bulk-copy unit serves one request after the other). A prefetch is a hint: it
changes no value, so there is nothing to compare against; what is tested is the chunk table (it
covers exactly the tensors' bytes) and that results are bitwise unchanged with it on.
"""
from __future__ import annotations

import torch

try:  # CPU builds of torch come without Triton
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

CHUNK, LANES = 16 << 10, 32  # bytes per bulk request; requests per program (one per thread of one warp)


def chunk_table(tensors, chunk: int = CHUNK) -> list[tuple[int, int]]:
    """(address, bytes) of every chunk of the tensors' storage, in order: chunks of at most `chunk`
    bytes, each 16-byte aligned and a multiple of 16 bytes (a tensor's last < 16 bytes are left out:
    the bulk request needs both). Tensors must be contiguous."""
    out = []
    for t in tensors:
        if not t.is_contiguous():
            raise ValueError("l2_prefetch: tensors must be contiguous")
        addr, size = t.data_ptr(), t.numel() * t.element_size()
        skip = -addr % 16
        addr, size = addr + skip, (size - skip) // 16 * 16
        out.extend((addr + o, min(chunk, size - o)) for o in range(0, size, chunk))
    return out


def kernel_available(device: torch.device) -> bool:
    """Whether `l2_prefetch` can run on this device (Triton, CUDA, sm_90 or later)."""
    return (triton is not None and device.type == "cuda"
            and torch.cuda.get_device_capability(device) >= (9, 0))


class Prefetch:
    """A fixed list of tensors to prefetch into L2: the chunk table is staged on the device once, and
    each call is one launch (capturable in a CUDA graph). The tensors must outlive it."""

    def __init__(self, tensors, device: torch.device):
        table = chunk_table(tensors)
        self.bytes = sum(n for _, n in table)
        self.chunks = torch.tensor(table, dtype=torch.int64, device=device).reshape(-1, 2)

    def __call__(self) -> None:
        n = self.chunks.shape[0]
        if n:
            _prefetch_kernel[(triton.cdiv(n, LANES),)](self.chunks, n, LANES=LANES, num_warps=1)


if triton is not None:
    @triton.jit
    def _prefetch_kernel(CHUNKS, n, LANES: tl.constexpr):
        i = tl.program_id(0) * LANES + tl.arange(0, LANES)
        ok = i < n
        addr = tl.load(CHUNKS + 2 * i, mask=ok, other=0)
        size = tl.load(CHUNKS + 2 * i + 1, mask=ok, other=0).to(tl.int32)
        tl.inline_asm_elementwise(
            "{ .reg .pred p; setp.gt.s32 p, $2, 0; @p cp.async.bulk.prefetch.L2.global [$1], $2; mov.u32 $0, 0; }",
            "=r,l,r", [addr, size], dtype=tl.int32, is_pure=False, pack=1)
