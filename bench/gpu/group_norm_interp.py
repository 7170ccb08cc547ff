"""The GroupNorm op's three kernel paths (`group_norm_silu`, `add_group_norm_silu`, `group_norm_silu_taps`) under
Triton's interpreter on the CPU, in both program orders (`group_norm.L2_ORDER`), fp16, against the float32
references: whether the orders give the same bits and cover every (image, chunk). For a machine without a GPU but with
Triton installed (the interpreter mishandles bf16, so fp16 only); on a GPU, `test_group_norm_program_orders_agree`.
Exits 1 if the orders differ, a residual sum is not exact or an error exceeds 1e-3 (fp16 rounding gives ~2e-4).

    TRITON_INTERPRET=1 python3 bench/gpu/group_norm_interp.py
"""
from __future__ import annotations

import os

import torch

from flexvar.kernels import group_norm as GN


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b).norm() / b.norm()).item()


def main() -> None:
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("group_norm_interp: run with TRITON_INTERPRET=1")
    torch.manual_seed(0)
    failed = False
    for B, C, H, W in [(3, 64, 8, 6), (1, 32, 3, 5), (2, 128, 4, 4)]:
        a, b = ((torch.randn(B, C, H, W) * 2 + 1).half().contiguous(memory_format=torch.channels_last)
                for _ in range(2))
        w, bias, cb = (torch.randn(C).half() for _ in range(3))
        taps = GN.conv_taps((torch.randn(3, C, 3, 3) * C ** -0.5).half())
        outs = {}
        for order in (True, False):  # the kernels' launcher, as the ops' CUDA path calls it
            GN.L2_ORDER = order
            y1 = GN._launch(b, cb, None, w, bias, 32, 1e-6, True)[1]
            s2, y2 = GN._launch(b, cb, a, w, bias, 32, 1e-6, False)
            t3 = GN._launch(b, cb, a, w, bias, 32, 1e-6, True, taps)[1]
            outs[order] = (y1, s2, y2, t3)
        same = all(torch.equal(x, y) for x, y in zip(outs[True], outs[False]))
        v = GN.add_channel_bias(b, cb)
        s = a + v
        y1, s2, y2, t3 = outs[True]
        e1 = rel(y1, GN.group_norm_silu_ref(v.float(), w.float(), bias.float(), 32, 1e-6, True))
        e2 = rel(y2, GN.group_norm_silu_ref(s.float(), w.float(), bias.float(), 32, 1e-6, False))
        e3 = rel(t3, GN.group_norm_silu_taps_ref(s.float(), w.float(), bias.float(), 32, 1e-6, taps.float()))
        exact = torch.equal(s2, s)
        print(f"B={B} C={C} {H}x{W}: orders give the same bits {same}, residual sum exact {exact}, "
              f"relative error against float32: {e1:.1e} {e2:.1e} {e3:.1e}", flush=True)
        failed |= not (same and exact and max(e1, e2, e3) < 1e-3)
    if failed:
        raise SystemExit("group_norm_interp: a check failed")


if __name__ == "__main__":
    main()
