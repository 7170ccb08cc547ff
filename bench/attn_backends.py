"""Attention backends on the fast runtime's operands: step queries (2B, l, H, d) as a transposed view,
keys/values as permuted views of the token-major cache prefix, one layer of a schedule.

    python -m flexvar.bench.attn_backends [--heads 16] [--head-dim 64] [--schedule 256-10] [--batches 1,32]

Each (backend, step) is captured in a CUDA graph of 20 calls and replayed; prints microseconds per
call, per step and summed over the schedule (multiply by the depth for a generation).
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from flexvar.schedule import Schedule

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}


def time_graph(fn, calls: int = 20, replays: int = 10) -> float:
    """Microseconds per call of fn, replayed from one CUDA graph of `calls` calls (median of replays)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(calls):
            fn()
    out = []
    for _ in range(replays):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        torch.cuda.synchronize()
        out.append(a.elapsed_time(b) * 1e3 / calls)
    return sorted(out)[len(out) // 2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--schedule", default="256-10")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--backends", default="flash,efficient,cudnn")
    args = ap.parse_args(argv)
    sched, H, d = Schedule.parse(args.schedule), args.heads, args.head_dim
    print(f"attention: {torch.cuda.get_device_name()}, torch {torch.__version__}, fp16, H={H} d={d}, {sched}")
    for B in (int(b) for b in args.batches.split(",")):
        kc, vc = (torch.randn(sched.total_tokens, 2 * B, H, d, device="cuda", dtype=torch.float16) for _ in range(2))
        for name in args.backends.split(","):
            per = []
            for si, (h, w) in enumerate(sched):
                end = sched.offsets[si] + h * w
                q = torch.randn(2 * B, h * w, H, d, device="cuda", dtype=torch.float16)

                def fn(q=q, end=end):
                    with sdpa_kernel([BACKENDS[name]]):
                        return F.scaled_dot_product_attention(q.transpose(1, 2), kc[:end].permute(1, 2, 0, 3),
                                                              vc[:end].permute(1, 2, 0, 3), scale=1.0)
                try:
                    per.append(time_graph(fn))
                except RuntimeError as e:
                    per.append(float("nan"))
                    print(f"attention: B={B} {name} step {si + 1}: {str(e).splitlines()[0][:120]}")
            print(f"attention: B={B:<3} {name:<9} sum {sum(per):8.1f} us  per step " + " ".join(f"{x:.1f}" for x in per))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
