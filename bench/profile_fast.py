"""Kernel-level profile of the fast runtime (one eager run under torch.profiler).

    python -m flexvar.bench.profile_fast [--depth d16] [--batch 1] [--schedule 256-10] [--no-compile]
    python -m flexvar.bench.profile_fast --graph --timeline out.json   # per-step timeline of a replay

Prints the CUDA kernels by total time and how many kernel launches one generation makes. With
--timeline, also the span, kernel-busy time and idle gaps of every step (a step ends with its
guided_sample kernel; what follows the last one is the decode), and writes every kernel's
(name, start, duration) to a JSON file.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from flexvar.config import FlexVARConfig, VQVAEConfig
from flexvar.fast import FastRuntime
from flexvar.random_weights import random_tokenizer, random_transformer
from flexvar.sampling import SamplingParams
from flexvar.schedule import Schedule


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", default="d16")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--schedule", default="256-10")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--graph", action="store_true", help="profile a CUDA-graph replay instead of an eager run")
    ap.add_argument("--dtype", default="fp16", choices=["fp16", "bf16"])
    ap.add_argument("--decode-kernels", action="store_true",
                    help="list the decode's kernels (after the last sampling) by full name: count and total us")
    ap.add_argument("--upsample", choices=["nearest", "transpose"],
                    help="the decoder's upsampling (FastRuntime's upsample; default: the runtime's)")
    ap.add_argument("--timeline", help="write every kernel's (name, start us, duration us) here and print per-step spans")
    ap.add_argument("--floors", action="store_true",
                    help="per step, the GEMM, attention, Inductor (residual + LayerNorm) and sampling kernels' time "
                         "against the work's lower bounds (bench/floors.py) at ceilings measured in this run")
    args = ap.parse_args(argv)
    dt = torch.float16 if args.dtype == "fp16" else torch.bfloat16
    model = random_transformer(FlexVARConfig.from_name(args.depth), device="cuda").to(dt)
    vae = random_tokenizer(VQVAEConfig.from_name("vq16"), device="cuda").to(dt)
    rt = FastRuntime(model, vae, use_graphs=args.graph, compile_blocks=not args.no_compile,
                     compile_decoder=not args.no_compile, upsample=args.upsample)
    sched, p = Schedule.parse(args.schedule), SamplingParams()
    labels = list(range(args.batch))
    for _ in range(2):
        rt.generate(labels, sched, p, 0)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        rt.generate(labels, sched, p, 0)
        torch.cuda.synchronize()
    ev = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(e.device_time for e in ev) / 1e3
    print(f"profile: {args.depth} B={args.batch} {sched}: {len(ev)} kernels, {total:.2f} ms of kernel time "
          f"(compile {'off' if args.no_compile else 'on'})")
    groups = defaultdict(lambda: [0, 0.0])
    for e in ev:
        g = groups[_category(e.name)]
        g[0] += 1
        g[1] += e.device_time / 1e3
    print("by category: " + "; ".join(f"{k} {n} kernels {ms:.2f} ms" for k, (n, ms) in
                                      sorted(groups.items(), key=lambda kv: -kv[1][1])))
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=args.rows, max_name_column_width=70))
    # (name, start us, duration us) in launch order
    kernels = sorted(((e.name, e.time_range.start, e.time_range.end - e.time_range.start) for e in ev),
                     key=lambda k: k[1])
    if args.decode_kernels:  # what runs after the last step's sampling
        last = max((i for i, k in enumerate(kernels) if "guided_sample" in k[0]), default=-1)
        tally = defaultdict(lambda: [0, 0.0])
        for name, _, d in kernels[last + 1:]:
            tally[name][0] += 1
            tally[name][1] += d
        print(f"decode: {sum(t for _, t in tally.values()):.1f} us of kernels in {len(kernels) - last - 1}")
        for name, (n, t) in sorted(tally.items(), key=lambda kv: -kv[1][1]):
            print(f"  {t:9.1f} us {n:4d}x  {name[:160]}")
    if args.floors:
        from .steps_latency import measure_ceilings
        for line in runtime_floor_lines(rt, sched, args.batch, kernels, measure_ceilings(torch.device("cuda"))):
            print(line)
    if args.timeline:
        for line in step_spans(kernels):
            print(line)
        with open(args.timeline, "w") as f:
            json.dump({"depth": args.depth, "batch": args.batch, "schedule": str(sched), "graph": args.graph,
                       "kernels": kernels}, f)
    return 0


def _parts(kernels: list[tuple[str, float, float]]) -> list[list[tuple[str, float, float]]]:
    """The kernels split after each guided_sample kernel: one part per step, then the decode's."""
    parts, cur = [], []
    for k in kernels:
        cur.append(k)
        if "guided_sample" in k[0]:
            parts.append(cur)
            cur = []
    if cur:
        parts.append(cur)
    return parts


# what each floor of bench/floors.py covers: (floor key, label, the kernels it is compared with)
_FLOOR_KERNELS = [("gemm_flop", "gemm", lambda n: _category(n) == "gemm"),
                  ("attention_bytes", "attention", lambda n: _category(n) == "attention"),
                  ("ln_bytes", "inductor", lambda n: _category(n) == "triton"),
                  ("sample_bytes", "sampling", lambda n: "guided_sample" in n)]


def runtime_floor_lines(rt: FastRuntime, sched: Schedule, batch: int, kernels: list[tuple[str, float, float]],
                        ceilings: dict) -> list[str]:
    """`floor_lines` for a generation of `rt` (its first-step table and last-step cache writes as configured), at
    `measure_ceilings`' ceilings."""
    from .floors import step_floors
    fl = step_floors(rt.model.cfg, sched, batch, first_step_table=rt.first_step_table, last_step_kv=rt.last_step_kv,
                     table_logits=rt.first_step_float32)
    return floor_lines(kernels, fl, ceilings["bf16_matmul_TFLOPs"], ceilings["copy_GBps"])


def floor_lines(kernels: list[tuple[str, float, float]], floors: list[dict], tflops: float, gbps: float) -> list[str]:
    """Per step: each kind's kernel time against its floor (FLOPs at `tflops`, bytes at `gbps`; attention's the larger
    of its bytes' and its products'), and the sums over the steps. kernels: (name, start us, duration us) sorted by
    start; floors: `floors.step_floors`."""
    def floor_us(key: str, fl: dict) -> float:
        if key == "attention_bytes":  # memory or products, whichever takes longer
            return max(fl[key] / (gbps * 1e3), fl.get("attention_flop", 0) / (tflops * 1e6))
        return fl[key] / (tflops * 1e6) if key == "gemm_flop" else fl[key] / (gbps * 1e3)

    out = [f"floors at {tflops:.0f} TFLOP/s and {gbps:.0f} GB/s (measured here): kernel us / floor us per step"]
    total = {label: [0.0, 0.0] for _, label, _ in _FLOOR_KERNELS}
    for i, (part, fl) in enumerate(zip(_parts(kernels), floors)):
        cells = []
        for key, label, match in _FLOOR_KERNELS:
            t, f = sum(d for n, _, d in part if match(n)), floor_us(key, fl)
            total[label][0] += t
            total[label][1] += f
            cells.append(f"{label} {t:8.1f} / {f:8.1f}")
        out.append(f"step {i + 1:2d}: " + ", ".join(cells))
    out.append("steps  : " + ", ".join(f"{label} {t:8.1f} / {f:8.1f} ({t - f:+.0f})"
                                       for label, (t, f) in total.items()))
    return out


def step_spans(kernels: list[tuple[str, float, float]]) -> list[str]:
    """Per step (ended by its guided_sample kernel) and for the decode after the last one: the span from
    the previous part's end to this part's end, the time kernels ran, the idle gaps and the busiest
    categories. kernels: (name, start us, duration us) sorted by start."""
    parts = _parts(kernels)
    out, prev_end = [], kernels[0][1] if kernels else 0.0
    for i, part in enumerate(parts):
        end = max(s + d for _, s, d in part)
        busy = sum(d for _, _, d in part)
        cats = defaultdict(float)
        for name, _, d in part:
            cats[_category(name)] += d
        top = ", ".join(f"{c} {t:.0f}" for c, t in sorted(cats.items(), key=lambda kv: -kv[1])[:4])
        label = f"step {i + 1:2d}" if "guided_sample" in part[-1][0] else "decode "
        out.append(f"{label}: span {end - prev_end:8.1f} us, kernels {busy:8.1f} us in {len(part):4d}, "
                   f"idle {end - prev_end - busy:7.1f} us  ({top})")
        prev_end = end
    return out


# "triton" is Inductor's generated code; the runtime's own Triton kernels go by what they do: `_attend_step_kernel`
# and `_attend_kernel` under attention, the GroupNorm op's `_gn_*` kernels under groupnorm, `_skinny_kernel` under gemm
_CATEGORIES = [("triton", r"^triton_"), ("flexvar", r"next_tokens|guided_sample|qk_norm_cache|small_step"),
               ("attention", r"flash|fmha|attention|sdpa|^_attend"), ("groupnorm", r"^_gn_"),
               ("conv", r"conv|fprop|implicit|winograd|dgrad"),
               ("gemm", r"gemm|cutlass|xmma|nvjet|cublas|sm\d+_|^_skinny"), ("copy", r"copy|memcpy|memset|fill")]


def _category(name: str) -> str:
    for k, pat in _CATEGORIES:
        if re.search(pat, name, re.I):
            return k
    return "other"


if __name__ == "__main__":
    sys.exit(main())
