"""Probe: the per-block GEMMs of one generation (d16 256-10 at batch 32 by default: the shapes `FastRuntime.gemm_shapes`
lists) through the runtime's tuned cuBLASLt choice (`lt_linear`, tuned here as a plan build tunes it) against what
Inductor's max-autotune picks for the same fixed shape (its Triton GEMM templates and ATen's cuBLAS, bias and GELU
as the epilogue). Each timed in a CUDA graph over weight copies larger than L2 (`lt_linear.graph_us`), as a
generation reads its weights; each Inductor result is checked against `lt_linear_ref` first. Prints per shape and
the total over the generation's blocks, i.e. how much a per-shape choice between the two could save.

    python3 bench/gpu/gemm_template_probe.py [--depth d16] [--batch 32] [--steps 5,6,7,8,9,10]
"""
from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

from flexvar.config import FlexVARConfig, VQVAEConfig
from flexvar.fast import FastRuntime
from flexvar.kernels import lt_linear as lt
from flexvar.random_weights import random_tokenizer, random_transformer
from flexvar.schedule import Schedule


def _inductor(gelu: bool):
    def f(x, w, b):
        y = F.linear(x, w, b)
        return F.gelu(y, approximate="tanh") if gelu else y
    return torch.compile(f, mode="max-autotune-no-cudagraphs", dynamic=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", default="d16")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--schedule", default="256-10")
    ap.add_argument("--steps", default="5,6,7,8,9,10", help="1-based steps whose GEMMs are probed")
    args = ap.parse_args()
    dt, dev = torch.float16, torch.device("cuda")
    model = random_transformer(FlexVARConfig.from_name(args.depth), device=dev).to(dt)
    vae = random_tokenizer(VQVAEConfig.from_name("vq16"), device=dev).to(dt)
    rt = FastRuntime(model, vae)
    sched = Schedule.parse(args.schedule)
    steps = {int(s) for s in args.steps.split(",")}
    rows = {2 * args.batch * h * w for si, (h, w) in enumerate(sched) if si + 1 in steps}
    shapes = [s for s in rt.gemm_shapes(sched, args.batch, rt.first_step_table) if s[0] in rows]
    depth = model.cfg.depth
    lt.tune(shapes, dt, dev)
    total_lt = total_ind = total_best = 0.0
    print(f"gemm probe: {torch.cuda.get_device_name()}, torch {torch.__version__}, {args.depth} batch {args.batch} "
          f"{args.schedule} steps {sorted(steps)}: {len(shapes)} shapes x {depth} blocks", flush=True)
    for M, N, K, gelu in shapes:
        g = torch.Generator(dev).manual_seed(M + N + K)
        copies = max(2, min(24, math.ceil((96 << 20) / (N * K * 2))))
        ws = [(torch.randn(N, K, device=dev, generator=g) / K ** 0.5).to(dt) for _ in range(copies)]
        x = torch.randn(M, K, device=dev, generator=g).to(dt)
        b = torch.randn(N, device=dev, generator=g).to(dt)
        f = _inductor(gelu)
        with torch.no_grad():
            ref = lt.lt_linear_ref(x.float(), ws[0].float(), b.float(), gelu)
            err = ((f(x, ws[0], b).float() - ref).norm() / ref.norm()).item()
            t_lt = lt.graph_us(lambda j: lt.lt_linear(x, ws[j], b, gelu), copies)
            t_ind = lt.graph_us(lambda j: f(x, ws[j], b), copies)
        total_lt += depth * t_lt
        total_ind += depth * t_ind
        total_best += depth * min(t_lt, t_ind)
        tflops = 2 * M * N * K / 1e6
        print(f"M={M:6d} N={N:5d} K={K:5d} gelu={int(gelu)}: lt {t_lt:8.1f} us ({tflops / t_lt:5.0f} TFLOP/s), "
              f"inductor {t_ind:8.1f} us ({tflops / t_ind:5.0f}), err {err:.1e}", flush=True)
    print(f"total over {depth} blocks: lt {total_lt / 1e3:.2f} ms, inductor {total_ind / 1e3:.2f} ms, "
          f"best of the two per shape {total_best / 1e3:.2f} ms", flush=True)


if __name__ == "__main__":
    main()
