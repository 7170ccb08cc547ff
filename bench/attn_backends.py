"""Attention backends on the fast runtime's operands: step queries (2B, l, H, d) as a transposed view,
keys/values as permuted views of the token-major cache prefix, one layer of a schedule.

    python -m flexvar.bench.attn_backends [--heads 16] [--head-dim 64] [--schedule 256-10] [--batches 1,32]
    python -m flexvar.bench.attn_backends --backends cudnn,triton --sweep
    python -m flexvar.bench.attn_backends --backends step,step-old,qknorm --old-kernels old/kernels

Backend `step` is `attend_step` (the block's attention from raw qkv, the cache write included),
`step-old` the same function from another checkout's kernels folder (--old-kernels, for A/B in
one run), `qknorm` the two kernels it replaces (`qk_norm_cache` + `attend`), `step-hm` the same
`attend_step` on head-major caches: stored (2B, H, L, d), so that a (image, head)'s keys are one
contiguous run instead of 128-byte rows B*H*d apart, and passed as (L, 2B, H, d) views (the kernel
reads the caches through their strides).

Each (backend, step) is captured in a CUDA graph of 20 calls and replayed; prints microseconds per
call, per step and summed over the schedule (multiply by the depth for a generation). `triton` is
`flexvar.kernels.attention.attend` with its default configuration (checked against `attend_ref`
first); --sweep also times every configuration of it (and of `step`) per step and prints the fastest.
"""
from __future__ import annotations

import argparse
import importlib.util

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from flexvar.kernels import qk_norm_cache
from flexvar.kernels.attention import attend, attend_config, attend_ref, attend_step, attend_step_ref
from flexvar.kernels.lt_linear import graph_us
from flexvar.kv_cache import head_major_copy
from flexvar.schedule import Schedule

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}


SWEEP = [(bm, bn, w, st) for bm in (16, 32, 64, 128) for bn in (32, 64, 128) for w in (4, 8) for st in (2, 3)
         if not (bm == 128 and w == 4) and not (bm <= 32 and bn == 128)]


def time_graph(fn, calls: int = 20, replays: int = 10) -> float:
    """Microseconds per call of fn, replayed from one CUDA graph of `calls` calls (median of replays)."""
    return graph_us(lambda i: fn(), calls, replays)


def sweep_configs(text: str) -> list[tuple[int, int, int, int]]:
    """`--sweep-configs`: BLOCK_M,BLOCK_N,warps,stages tuples separated by ';', block sizes powers of two >= 16."""
    configs = []
    for item in text.split(";"):
        try:
            c = tuple(int(x) for x in item.split(","))
        except ValueError:
            c = ()
        if len(c) != 4 or any(b < 16 or b & (b - 1) for b in c[:2]) or c[2] not in (1, 2, 4, 8, 16) or c[3] < 1:
            raise argparse.ArgumentTypeError(f"configuration {item!r} is not BLOCK_M,BLOCK_N,warps,stages (block "
                                             "sizes powers of two >= 16, warps a power of two up to 16, stages >= 1)")
        configs.append(c)
    return configs


def sweep_steps(text: str) -> set[int]:
    """`--sweep-steps`: 1-based step numbers separated by ','."""
    try:
        steps = {int(x) for x in text.split(",")}
    except ValueError:
        steps = set()
    if not steps or min(steps) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of step numbers from 1, e.g. 5,6,7")
    return steps


def sweep(label: str, call, ref: torch.Tensor, configs, default) -> None:
    """Prints the fastest of `configs` for call(config), each first checked against ref (relative error <= 5e-3)."""
    for c in configs:
        err = ((call(c).float() - ref).norm() / ref.norm()).item()
        if err > 5e-3:
            raise SystemExit(f"attention: {label}, configuration {c} differs from the reference by {err:.3g}")
    us, best = min((time_graph(lambda c=c: call(c)), c) for c in configs)
    print(f"attention: {label}: default {default}, best {best} {us:.1f} us")


def load_old(kernels_dir: str):
    """`attention.py` of another checkout's kernels folder as a standalone module (its `attend_step`)."""
    spec = importlib.util.spec_from_file_location("old_attention", f"{kernels_dir}/attention.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def step_operands(B: int, l: int, H: int, d: int, start: int, L: int, head_major: bool = False):
    """Raw qkv (2B, l, 3C) and per-head scale of one step, fp16, and fresh caches (L, 2B, H, d): contiguous,
    or (head_major) views of caches stored (2B, H, L, d)."""
    qkv = torch.randn(2 * B, l, 3 * H * d, device="cuda", dtype=torch.float16) * 3
    scale = torch.rand(H, 1, device="cuda") * 20 + 1
    kc = F.normalize(torch.randn(L, 2 * B, H, d, device="cuda"), dim=-1).half()
    vc = torch.randn(L, 2 * B, H, d, device="cuda", dtype=torch.float16)
    if head_major:
        kc, vc = (head_major_copy(c) for c in (kc, vc))
    return qkv, scale, kc, vc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--schedule", default="256-10")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--backends", default="flash,efficient,cudnn,triton")
    ap.add_argument("--sweep", action="store_true", help="time every Triton configuration of `attend` (backend "
                                                         "triton) and `attend_step` (backend step) per step")
    ap.add_argument("--sweep-steps", type=sweep_steps, help="steps (1-based, comma-separated) the sweep times; "
                                                              "default all")
    ap.add_argument("--sweep-configs", type=sweep_configs, default=SWEEP,
                    help="configurations BLOCK_M,BLOCK_N,warps,stages separated by ';' (default: the 34 of SWEEP)")
    ap.add_argument("--old-kernels", help="kernels folder of another checkout, for the `step-old` backend")
    args = ap.parse_args(argv)
    old = load_old(args.old_kernels) if args.old_kernels else None
    sched, H, d = Schedule.parse(args.schedule), args.heads, args.head_dim
    print(f"attention: {torch.cuda.get_device_name()}, torch {torch.__version__}, fp16, H={H} d={d}, {sched}")
    for B in (int(b) for b in args.batches.split(",")):
        kc, vc = (torch.randn(sched.total_tokens, 2 * B, H, d, device="cuda", dtype=torch.float16) for _ in range(2))
        for name in args.backends.split(","):
            per = []
            for si, (h, w) in enumerate(sched):
                end = sched.offsets[si] + h * w
                q = torch.randn(2 * B, h * w, H, d, device="cuda", dtype=torch.float16)

                if name in ("step", "step-old", "qknorm", "step-hm"):
                    start = sched.offsets[si]
                    qkv, scale, k0, v0 = step_operands(B, h * w, H, d, start, sched.total_tokens, name == "step-hm")
                    kr, vr = k0.clone(), v0.clone()
                    ref = attend_step_ref(qkv, scale, kr, vr, start).float()
                    fn = {"step": lambda: attend_step(qkv, scale, k0, v0, start),
                          "step-hm": lambda: attend_step(qkv, scale, k0, v0, start),
                          "step-old": lambda: old.attend_step(qkv, scale, k0, v0, start),
                          "qknorm": lambda: attend(qk_norm_cache(qkv, scale, k0, v0, start), k0, v0, end)}[name]
                    err = ((fn().float() - ref).norm() / ref.norm()).item()
                    if err > 5e-3 or not torch.equal(v0[start:end], vr[start:end]):
                        raise SystemExit(f"attention: {name} differs from attend_step_ref by {err:.3g} (B={B}, step {si + 1})")
                    if args.sweep and name == "step" and (args.sweep_steps is None or si + 1 in args.sweep_steps):
                        sweep(f"B={B:<3} step step {si + 1:2d} (l={h * w}, start={start})",
                              lambda c: attend_step(qkv, scale, k0, v0, start, c), ref, args.sweep_configs,
                              attend_config(h * w))
                    per.append(time_graph(fn))
                    continue

                if name == "triton":
                    ref = attend_ref(q, kc, vc, end).float()
                    err = (attend(q, kc, vc, end).float() - ref).abs().max().item()
                    if err > 2e-2:
                        raise SystemExit(f"attention: triton differs from attend_ref by {err:.3g} (B={B}, step {si + 1})")

                    def fn(q=q, end=end):
                        return attend(q, kc, vc, end)
                    if args.sweep and (args.sweep_steps is None or si + 1 in args.sweep_steps):
                        sweep(f"B={B:<3} step {si + 1:2d} (l={h * w}, end={end})",
                              lambda c: attend(q, kc, vc, end, c), ref, args.sweep_configs, attend_config(h * w))
                    per.append(time_graph(fn))
                    continue

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
