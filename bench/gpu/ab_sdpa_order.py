"""In-run A/B of the fast runtime's attention backend preference: cuDNN first vs flash first.

    python bench/gpu/ab_sdpa_order.py [--depth d16] [--batches 1,32] [--repeat 20]

Two FastRuntimes on one model, each capturing its CUDA graph while `flexvar.fast._SDPA_BACKENDS`
holds its order; their replays are timed interleaved (fp16, 256-10, decode included). Prints the
median and min-max of each per batch.
"""
import argparse
import time

import torch
from torch.nn.attention import SDPBackend

import flexvar.fast as fast
from flexvar.config import FlexVARConfig, VQVAEConfig
from flexvar.random_weights import random_tokenizer, random_transformer
from flexvar.sampling import SamplingParams
from flexvar.schedule import Schedule

ORDERS = {"cudnn-first": [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                          SDPBackend.MATH],
          "flash-first": [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", default="d16")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    model = random_transformer(FlexVARConfig.from_name(args.depth), device="cuda").half()
    vae = random_tokenizer(VQVAEConfig.from_name("vq16"), device="cuda").half()
    sched, p = Schedule.parse("256-10"), SamplingParams()
    for B in (int(b) for b in args.batches.split(",")):
        labels = list(range(B))
        rts = {}
        for name, order in ORDERS.items():
            fast._SDPA_BACKENDS = order
            rts[name] = fast.FastRuntime(model, vae)
            rts[name].generate(labels, sched, p, 0)  # capture with this order
        times = {n: [] for n in rts}
        for _ in range(args.repeat):
            for n, rt in rts.items():
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                rt.generate(labels, sched, p, 0)
                torch.cuda.synchronize()
                times[n].append((time.perf_counter() - t0) * 1e3)
        for n, t in times.items():
            t.sort()
            print(f"ab_sdpa: {args.depth} 256-10 B={B:<3} {n:<12} median {t[len(t) // 2]:7.2f} ms "
                  f"[{t[0]:.2f}, {t[-1]:.2f}]", flush=True)
        a, b = (rts[n].generate(labels, sched, p, 0)[0][-1].clone() for n in rts)
        print(f"ab_sdpa: B={B} final codes agree {(a == b).float().mean().item():.4f}", flush=True)
        for rt in rts.values():
            rt.clear()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
