"""Agreement of the bf16/fp16 fast runtime with float32 (random weights, greedy decoding).

    python -m flexvar.bench.precision [--depth d16] [--schedule 256-10] [--batch 8]

one-step code agreement: with the float32 run's codes as the prefix, the fraction of tokens whose
greedy (guided) code in low precision equals float32's; reported for step 1 of each schedule step
and over all steps. PSNR: free-running greedy images of the low-precision fast runtime against
the float32 reference images.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys

import torch

from flexvar import Pipeline
from flexvar.config import FlexVARConfig, VQVAEConfig
from flexvar.random_weights import random_tokenizer, random_transformer
from flexvar.sampling import SamplingParams, guidance_weight, guide
from flexvar.schedule import Schedule


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.float() - b.float()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(255 ** 2 / mse)


@torch.no_grad()
def fast_teacher_forced(rt, labels, codes, sched):
    """[cond; uncond] logits of every step through the fast runtime's own step, given codes."""
    from flexvar.kv_cache import KVCache
    cfg, B = rt.model.cfg, len(labels)
    cond, blocks, head = rt.modulation(tuple(labels) + (cfg.null_class,) * B)
    cache = KVCache(cfg.depth, sched.total_tokens, 2 * B, cfg.heads, cfg.head_dim, rt.dtype, rt.device)
    out = []
    for si, hw in enumerate(sched):
        if si == 0:
            x = cond[:, None].float() + rt.model.pos_start.float() + rt.positions(hw)[None].float()
        else:
            x = rt.next_tokens(codes[si - 1], hw).float().repeat(2, 1, 1)
        for i, w in enumerate(rt.block_weights):
            x = rt.block_step(x, blocks[i], *w, cache.kv[i, 0], cache.kv[i, 1], sched.offsets[si], cfg.norm_eps)
        out.append(rt.logits(x, head))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", default="d16")
    ap.add_argument("--tokenizer", default="vq16")
    ap.add_argument("--schedule", default="256-10")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    dev = "cuda"
    model = random_transformer(FlexVARConfig.from_name(args.depth), seed=0, device=dev)
    vae = random_tokenizer(VQVAEConfig.from_name(args.tokenizer), seed=1, device=dev)
    sched = Schedule.parse(args.schedule)
    labels = [(37 * i + 3) % 1000 for i in range(args.batch)]
    p = SamplingParams(cfg=2.5, guidance="ramp", top_k=1, top_p=0.0)
    ref_pipe = Pipeline(copy.deepcopy(model), copy.deepcopy(vae), device=dev, dtype=torch.float32)
    ref = ref_pipe.generate(labels, sched, cfg=2.5, top_k=1, top_p=0.0, fast=False)
    report = {"depth": args.depth, "schedule": str(sched), "batch": args.batch, "rows": []}
    for name, dt in (("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)):
        pipe = Pipeline(copy.deepcopy(model), copy.deepcopy(vae), device=dev, dtype=dt)
        codes = [c.to(dev) for c in ref.codes]
        agree = []
        for si, (hw, logits) in enumerate(zip(sched, fast_teacher_forced(pipe.fast_runtime, labels, codes, sched))):
            t = guidance_weight(si, len(sched), hw, p)
            g = guide(logits, t, "ramp").argmax(-1).view(-1, *hw)
            agree.append((g == codes[si]).float().mean().item())
        n = [h * w for h, w in sched]
        overall = sum(a * k for a, k in zip(agree, n)) / sum(n)
        fast = pipe.generate(labels, sched, cfg=2.5, top_k=1, top_p=0.0)
        row = {"dtype": name, "one_step_agreement_per_step": [round(a, 4) for a in agree],
               "one_step_agreement_all": round(overall, 4),
               "free_running_final_code_agreement": round((fast.codes[-1] == ref.codes[-1]).float().mean().item(), 4),
               "psnr_db_vs_fp32_reference": round(psnr(fast.images, ref.images), 2)}
        report["rows"].append(row)
        print(f"precision: {name}: one-step agreement step1 {agree[0]:.4f}, all steps {overall:.4f}; "
              f"free-running final codes {row['free_running_final_code_agreement']:.4f}; "
              f"PSNR {row['psnr_db_vs_fp32_reference']} dB", flush=True)
        del pipe
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
