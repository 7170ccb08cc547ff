"""Probe: which decodes send the GroupNorm ops down their reference path on CUDA, and with what input layout.

Session 25's `test_pipeline_first_step_from_float32_weights` (1,000 images of 3x3 latents, the 'tiny' tokenizer,
fp16) failed in the compiled decoder's stride check on `group_norm_silu`: the op returned NCHW strides where its fake
had said channels-last, i.e. the op's reference path ran, which it does only where `kernel_available` or the bias
check refuses the input. This decodes random codes through the fast runtime's compiled decoder for a few (batch,
latent size) pairs and prints, for each, how many op calls took the reference path and the first refused input's
shape, dtype and strides (the op's own warning), so that the cause can be read off.

    python3 bench/gpu/gn_fallback_probe.py [--cases 1000x3,64x3,32x16,8x16] [--tokenizer tiny] [--device cuda]
"""
from __future__ import annotations

import argparse
import logging

import torch

from flexvar.config import FlexVARConfig, VQVAEConfig
from flexvar.fast import FastRuntime
from flexvar.kernels import group_norm
from flexvar.random_weights import random_tokenizer, random_transformer


class _Last(logging.Handler):
    def __init__(self):
        super().__init__()
        self.message = ""

    def emit(self, record):
        self.message = record.getMessage()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="1000x3,64x3,32x16,8x16", help="BATCHxSIDE of the latents, comma-separated")
    ap.add_argument("--tokenizer", default="tiny")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run (the references only, no fallbacks)")
    args = ap.parse_args()
    model = random_transformer(FlexVARConfig.from_name("tiny"), seed=3, device=args.device).half()
    vae = random_tokenizer(VQVAEConfig.from_name(args.tokenizer), seed=4, device=args.device).half()
    rt = FastRuntime(model, vae, use_graphs=False)
    handler = _Last()
    logging.getLogger(group_norm.log.name).addHandler(handler)
    for case in args.cases.split(","):
        B, side = map(int, case.split("x"))
        codes = torch.randint(0, vae.cfg.codebook_size, (B, side, side), device=args.device)
        group_norm.fallbacks["cuda"] = 0  # the op warns on the first fallback of a count that starts at zero
        handler.message = ""
        with torch.no_grad():
            rt.decode(codes)
        if args.device == "cuda":
            torch.cuda.synchronize()
        print(f"gn probe: batch {B} latents {side}x{side}: {group_norm.fallbacks['cuda']} reference-path calls"
              + (f"; first: {handler.message}" if handler.message else ""), flush=True)


if __name__ == "__main__":
    main()
