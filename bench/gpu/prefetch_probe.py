"""Probe (session 5): does an L2 prefetch of the next block's weights speed up a chain of few-row GEMMs?

16 d16/d24 blocks of four GEMMs (qkv, proj, fc1+GELU, fc2) at M rows, in one CUDA graph: without
prefetch, and with the next block's weights prefetched before each block, in the stream or on a
side stream, by the bulk (TMA) and the per-line method. Also the prefetch launch alone.

    python bench/gpu/prefetch_probe.py [--rows 2,50] [--width 1024]
"""
import argparse

import torch
import torch.nn.functional as F

import flexvar.kernels as K
from flexvar.fast import fc1_gelu


def timed(fn, replays=15):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    out = []
    for _ in range(replays):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(1000)
        a.record()
        g.replay()
        b.record()
        torch.cuda.synchronize()
        out.append(a.elapsed_time(b) * 1e3)
    return sorted(out)[len(out) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="2,50")
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--depth", type=int, default=16)
    a = ap.parse_args()
    assert K.load()
    C, dt = a.width, torch.float16
    blocks = [[(torch.randn(n, k, device="cuda", dtype=dt) / k ** 0.5, torch.randn(n, device="cuda", dtype=dt))
               for n, k in ((3 * C, C), (C, C), (4 * C, C), (C, 4 * C))] for _ in range(a.depth)]
    flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    mb = sum(w.numel() * 2 for w, _ in blocks[0]) / 1e6
    print(f"prefetch_probe: {torch.cuda.get_device_name()}, C={C}, depth {a.depth}, {mb:.1f} MB of weights per block")
    side = torch.cuda.Stream()

    def chain(x, pf=None, on_side=False):
        def run():
            flush.zero_()  # weights out of L2
            h = x
            for i, blk in enumerate(blocks):
                if pf is not None and i + 1 < len(blocks):
                    ws = [w for w, _ in blocks[i + 1]]
                    if on_side:
                        side.wait_stream(torch.cuda.current_stream())
                        with torch.cuda.stream(side):
                            pf(ws)
                    else:
                        pf(ws)
                if pf is not None and i == 0:
                    pf([w for w, _ in blk])
                q = F.linear(h, *blk[0])
                o = F.linear(q[:, :C], *blk[1])
                f = fc1_gelu(o, *blk[2])
                h = F.linear(f, *blk[3])
            if on_side:
                torch.cuda.current_stream().wait_stream(side)
        return run

    base_flush = timed(lambda: flush.zero_())
    ws0 = [w for w, _ in blocks[1]]
    variants = {"bulk64K": lambda ws: K.prefetch_l2(ws, "bulk", 64 << 10),
                "bulk16K": lambda ws: K.prefetch_l2(ws, "bulk", 16 << 10),
                "bulk64K-132": lambda ws: K.prefetch_l2(ws, "bulk", 64 << 10, 132),
                "lines": lambda ws: K.prefetch_l2(ws, "lines"),
                "lines-132": lambda ws: K.prefetch_l2(ws, "lines", blocks=132)}
    for name, pf in variants.items():
        t = timed(lambda pf=pf: pf(ws0))
        print(f"prefetch_probe: launch alone {name:<12} {t:7.1f} us (one block's weights)")
    for M in (int(m) for m in a.rows.split(",")):
        x = torch.randn(M, C, device="cuda", dtype=dt)
        t0 = timed(chain(x)) - base_flush
        print(f"prefetch_probe: M={M:<4} no prefetch {t0:8.1f} us ({t0 / a.depth:.1f} per block)")
        for name, pf in variants.items():
            for on_side in (False, True):
                t = timed(chain(x, pf, on_side)) - base_flush
                print(f"prefetch_probe: M={M:<4} {name:<12} {'side' if on_side else 'in-stream':<9} {t:8.1f} us "
                      f"({t / a.depth:.1f} per block, {t - t0:+.1f})")


if __name__ == "__main__":
    main()
