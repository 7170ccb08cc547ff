"""Probe: would block weights prefetched into L2 make batch 1's middle steps faster?

At batch 1 every block GEMM of steps 3-8 (18-200 token rows) is latency-bound: a d16 qkv (6 MiB) takes
~7 us in a CUDA graph, ~4 us of which any GEMM costs. If the next GEMMs' weights were already in L2
(50 MB on the H100; a d16 block's four weights are 24 MiB), the part that streams them could shrink.

    python bench/gpu/l2_probe.py [--widths 1024,1536] [--rows 18,32,50,72,128,200] [--runtime]

1. GEMMs alone: a CUDA graph of `depth` blocks x (qkv, proj, fc1, fc2) F.linear at R rows, us per block:
   - "cold": distinct weights per block (as in the model);
   - "warm": every block the same weights (in L2 after the first block: the upper bound);
   - "side-a": distinct weights, and before GEMM j a second stream issues `cp.async.bulk.prefetch.L2` of
     GEMM j + a's weight (one small Triton kernel, forked off the main stream in the graph);
   - "in-a": the same prefetch kernel launched on the main stream (costs a launch, no fork).
   Here one program prefetches a whole weight, through one SM's bulk-copy unit, one request after the
   other: ~100 us a block (`_l2_probe_s15.log`), far slower than the GEMMs. The runtime version that was
   measured next (40a88f7, reverted) spread 16 KB requests over many programs, and was still slower end to end.
2. --runtime: the fast runtime at batch 1, 256-10 (decode included), as built, then with every block's
   weights replaced by block 0's (the whole generation's upper bound from L2-resident weights).
"""
from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from flexvar.bench.attn_backends import time_graph


@triton.jit
def _prefetch_kernel(ADDR, SIZE, CHUNK: tl.constexpr, LANES: tl.constexpr):
    """Program i prefetches range i (ADDR[i], SIZE[i] bytes) into L2 in CHUNK-byte bulk requests."""
    i = tl.program_id(0)
    base = tl.load(ADDR + i)
    size = tl.load(SIZE + i)
    for c0 in range(0, size, CHUNK * LANES):
        off = c0 + tl.arange(0, LANES).to(tl.int64) * CHUNK
        n = tl.minimum(size - off, CHUNK).to(tl.int32)
        tl.inline_asm_elementwise(
            "{ .reg .pred p; setp.gt.s32 p, $2, 0; @p cp.async.bulk.prefetch.L2.global [$1], $2; mov.u32 $0, 0; }",
            "=r,l,r", [base + off, n], dtype=tl.int32, is_pure=False, pack=1)


class Prefetch:
    """A prefetch launch for a fixed list of tensors (addresses and sizes staged on the device once)."""

    def __init__(self, tensors):
        dev = tensors[0].device
        self.addr = torch.tensor([t.data_ptr() for t in tensors], dtype=torch.int64, device=dev)
        self.size = torch.tensor([t.numel() * t.element_size() for t in tensors], dtype=torch.int64, device=dev)
        self.n = len(tensors)

    def __call__(self):
        _prefetch_kernel[(self.n,)](self.addr, self.size, CHUNK=32768, LANES=64, num_warps=2)


def gemm_blocks(C: int, depth: int, rows: int, shared: bool, dev, dt):
    shapes = [(3 * C, C), (C, C), (4 * C, C), (C, 4 * C)]
    blocks = []
    for b in range(depth):
        if shared and b:
            blocks.append(blocks[0])
            continue
        blocks.append([(torch.randn(n, k, device=dev, dtype=dt) / k ** 0.5, torch.randn(n, device=dev, dtype=dt))
                       for n, k in shapes])
    xs = [torch.randn(rows, k, device=dev, dtype=dt) for _, k in shapes]
    return blocks, xs


def run_gemms(C: int, depth: int, rows: int, mode: str, dev, dt) -> float:
    blocks, xs = gemm_blocks(C, depth, rows, mode == "warm", dev, dt)
    flat = [wb for blk in blocks for wb in blk]  # the GEMMs in order
    pre, ahead, side = None, 0, None
    if mode.startswith(("side-", "in-")):
        ahead = int(mode.split("-")[1])
        pre = [Prefetch([flat[j + ahead][0]]) if j + ahead < len(flat) else None for j in range(len(flat))]
        side = torch.cuda.Stream() if mode.startswith("side-") else None

    def body():
        main = torch.cuda.current_stream()
        for j, (w, b) in enumerate(flat):
            if pre is not None and pre[j] is not None:
                if side is None:
                    pre[j]()
                else:
                    side.wait_stream(main)
                    with torch.cuda.stream(side):
                        pre[j]()
            F.linear(xs[j % 4], w, b)
        if side is not None:
            main.wait_stream(side)

    return time_graph(body, calls=1, replays=15) / depth


def runtime_upper_bound(depth_name: str) -> None:
    from flexvar.bench.steps_latency import Impls, time_call
    from flexvar.sampling import SamplingParams
    from flexvar.schedule import Schedule
    dev = torch.device("cuda")
    impls = Impls(depth_name, "vq16", dev, torch.float16, torch.float16)
    sched, p = Schedule.parse("256-10"), SamplingParams(cfg=2.5, guidance="ramp", top_k=900, top_p=0.95)
    rt = impls.runtime("fast")
    out = {}
    for name in ("as built", "block 0 weights everywhere", "as built (again)"):
        if name.startswith("block 0"):
            saved = rt.block_weights, rt.step_weights
            rt.block_weights = [rt.block_weights[0]] * len(rt.block_weights)
            rt.step_weights = tuple([ws[0]] * len(ws) for ws in rt.step_weights)
        rt._plans.clear()
        fn = impls.call("fast", [207], sched, p, 0, True)
        _, times = time_call(fn, dev, 21)
        out[name] = (statistics.median(times), min(times), max(times))
        if name.startswith("block 0"):
            rt.block_weights, rt.step_weights = saved
    for name, (med, lo, hi) in out.items():
        print(f"runtime {depth_name} B1 256-10 (decode included), {name}: {med:.3f} ms "
              f"(min {lo:.3f}, max {hi:.3f})", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--widths", default="1024,1536")
    ap.add_argument("--rows", default="18,32,50,72,128,200")
    ap.add_argument("--modes", default="cold,warm,side-1,side-2,side-4,in-1,in-2")
    ap.add_argument("--runtime", action="store_true")
    args = ap.parse_args()
    dev, dt = torch.device("cuda"), torch.float16
    torch.manual_seed(0)
    modes = args.modes.split(",")
    for C in (int(c) for c in args.widths.split(",")):
        depth = {1024: 16, 1280: 20, 1536: 24}[C]
        print(f"C={C} depth={depth}: us per block (qkv, proj, fc1, fc2), median of 15 graph replays", flush=True)
        print("rows  " + "  ".join(f"{m:>8}" for m in modes), flush=True)
        for R in (int(r) for r in args.rows.split(",")):
            us = [run_gemms(C, depth, R, m, dev, dt) for m in modes]
            print(f"{R:4d}  " + "  ".join(f"{u:8.2f}" for u in us), flush=True)
    if args.runtime:
        for name in ("d16", "d24"):
            runtime_upper_bound(name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
