"""One step's transformer (every block) per path, timed as CUDA-graph replays (fp16, random weights):
the compiled per-block path (cuBLAS + Inductor), the `block_gemm` path with and without programmatic
dependent launch, and the `block_gemm` path under tile configurations forced for every GEMM.

    python bench/gpu/block_gemm_probe.py [--depths d16,d24] [--batches 1,8,32] [--max-rows 4096] [--sweep]

Prints a table per (depth, batch): step, rows, median us (min-max) of each path. Not a pytest: a probe
for choosing `block_gemm_rows` and the tile rule.
"""
from __future__ import annotations

import argparse
import statistics

import torch

from flexvar.config import FlexVARConfig, VQVAEConfig
from flexvar.fast import FastRuntime
from flexvar.kernels import block_gemm as G
from flexvar.random_weights import random_tokenizer, random_transformer
from flexvar.schedule import Schedule

SWEEP = [(64, 32, 64, 4, 4), (64, 64, 64, 4, 4), (64, 128, 64, 4, 4), (64, 32, 128, 4, 3), (64, 64, 128, 4, 3),
         (64, 128, 64, 8, 3), (64, 64, 64, 4, 6), (128, 64, 64, 8, 4), (128, 128, 64, 8, 3)]


def time_graph(fn, reps: int = 20, inner: int = 5) -> tuple[float, float, float]:
    """Median, min and max microseconds of one fn() call, from graph replays of `inner` calls."""
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(inner):
            fn()
    g.replay()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) * 1e3 / inner)
    return statistics.median(ts), min(ts), max(ts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--depths", default="d16,d24")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--schedule", default="256-10")
    ap.add_argument("--max-rows", type=int, default=4096)
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--kernels", help="rows (comma-separated): each fused GEMM alone against F.linear, per config")
    args = ap.parse_args(argv)
    if args.kernels:
        return kernels(args.depths.split(",")[0], [int(m) for m in args.kernels.split(",")])
    sched = Schedule.parse(args.schedule)
    vae = random_tokenizer(VQVAEConfig.from_name("tiny"), device="cuda").half()
    for depth in args.depths.split(","):
        cfg = FlexVARConfig.from_name(depth)
        model = random_transformer(cfg, device="cuda").half()
        paths = {"cublas": FastRuntime(model, vae, fused_small_steps=False, block_gemm_rows=0),
                 "bgemm": FastRuntime(model, vae, fused_small_steps=False, block_gemm_rows=1 << 30),
                 "bgemm-nopdl": FastRuntime(model, vae, fused_small_steps=False, block_gemm_rows=1 << 30, pdl=False)}
        rule = G.gemm_config
        for B in map(int, args.batches.split(",")):
            R = 2 * B
            labels = tuple(range(B)) + (cfg.null_class,) * B
            blocks = paths["cublas"].modulation(labels)[1]
            kv = torch.randn(cfg.depth, 2, sched.total_tokens, R, cfg.heads, cfg.head_dim, device="cuda").half()
            names = list(paths) + ([f"cfg{i}" for i in range(len(SWEEP))] if args.sweep else [])
            print(f"\n{depth} batch {B} ({R} rows per token), us per step (all {cfg.depth} blocks): "
                  + ", ".join(names) + (f"; cfgN = {SWEEP}" if args.sweep else ""))
            for si, (h, w) in enumerate(sched):
                l, start = h * w, sched.offsets[si]
                if R * l > args.max_rows or R * l <= 32:
                    continue
                x = torch.randn(R, l, cfg.width, device="cuda") * 2
                row = []
                for name in names:
                    if name.startswith("cfg"):
                        c = SWEEP[int(name[3:])]
                        G.gemm_config = lambda M, N, K, c=c: c
                        rt = paths["bgemm"]
                    else:
                        G.gemm_config = rule
                        rt = paths[name]
                    try:
                        med, lo, hi = time_graph(lambda: rt.transformer(x, blocks, kv, start))
                        row.append(f"{med:8.1f} ({lo:.0f}-{hi:.0f})")
                    except Exception as e:  # a config Triton cannot build (shared memory): say so, go on
                        row.append(f"{type(e).__name__:>8s}")
                    G.gemm_config = rule
                print(f"step {si + 1:2d} {R * l:6d} rows: " + " | ".join(row), flush=True)
    return 0


def kernels(depth: str, rows: list[int]) -> int:
    """Each of a block's four fused GEMMs alone (graph replays, no PDL) against F.linear (cuBLAS) on the
    same shape, under the default rule and every SWEEP configuration: us per call. The rows are two
    images' (batch 1 with guidance)."""
    cfg = FlexVARConfig.from_name(depth)
    C, F4 = cfg.width, cfg.mlp_hidden
    g = torch.Generator("cuda").manual_seed(0)
    mod = torch.randn(2, 6, C, device="cuda", generator=g).half()  # two images (batch 1 with guidance)
    ws = {n: (torch.randn(o, i, device="cuda", generator=g).half() / i ** 0.5, torch.randn(o, device="cuda").half())
          for n, o, i in (("qkv", 3 * C, C), ("proj", C, C), ("fc1", F4, C), ("fc2", C, F4))}
    print(f"\n{depth} kernels alone, us per call: cublas | rule | " + " | ".join(f"cfg{i}" for i in range(len(SWEEP)))
          + f"; cfgN = {SWEEP}")
    for M in rows:
        x = torch.randn(M, C, device="cuda", generator=g) * 2
        parts = G.row_parts_ref(x, 32)
        for name, (w, b) in ws.items():
            a = torch.randn(M, w.shape[1], device="cuda", generator=g).half()
            base = time_graph(lambda: torch.nn.functional.linear(a, w, b))[0]
            row = [f"{base:6.1f}"]
            for c in [None] + SWEEP:
                if name in ("qkv", "fc1"):
                    fn = lambda c=c: G.ln_linear(x, parts, mod, 2, 4, w, b, M // 2, 1e-6, gelu=name == "fc1", config=c)
                else:
                    fn = lambda c=c: G.linear_residual(a, w, b, x, mod, 0, M // 2, config=c)
                try:
                    row.append(f"{time_graph(fn)[0]:6.1f}")
                except Exception as e:
                    row.append(type(e).__name__[:6])
            print(f"M {M:5d} {name:4s}: " + " | ".join(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
