"""Probe: which decodes send the GroupNorm ops down their reference path on CUDA, and with what input layout.

Session 25's `test_pipeline_first_step_from_float32_weights` (1,000 images of 3x3 latents, the 'tiny' tokenizer)
failed in the compiled decoder's stride check on `group_norm_silu`: the op returned NCHW strides where its fake had
said channels-last, i.e. the op's reference path ran (F.group_norm, which on CUDA returns NCHW for channels-last
inputs: pytorch/pytorch#111824), which it does only where `kernel_available` or the bias check refuses the input.
The likely input: the test's float32 pipeline, whose runtime then used the op (the kernels take fp16/bf16 only;
since session 25 a float32 runtime no longer uses it unless asked). This decodes random codes through the fast
runtime's compiled decoder with the op forced on, for a few (dtype, batch, latent size) cases, and prints for each
how many op calls took the reference path and the first refused input's shape, dtype and strides (the op's own
warning), so that the cause can be read off.

    python3 bench/gpu/gn_fallback_probe.py [--dtypes fp16,fp32] [--cases 1000x3,64x3,32x16,8x16] [--tokenizer tiny]
        [--device cuda]
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
    ap.add_argument("--dtypes", default="fp16,fp32")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke run (the references only, no fallbacks)")
    args = ap.parse_args()
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    handler = _Last()
    logging.getLogger(group_norm.log.name).addHandler(handler)
    for name in args.dtypes.split(","):
        dt = dtypes[name]
        model = random_transformer(FlexVARConfig.from_name("tiny"), seed=3, device=args.device).to(dt)
        vae = random_tokenizer(VQVAEConfig.from_name(args.tokenizer), seed=4, device=args.device).to(dt)
        rt = FastRuntime(model, vae, use_graphs=False, group_norm_op=True)
        for case in args.cases.split(","):
            B, side = map(int, case.split("x"))
            codes = torch.randint(0, vae.cfg.codebook_size, (B, side, side), device=args.device)
            group_norm.fallbacks["cuda"] = 0  # the op warns on the first fallback of a count that starts at zero
            handler.message = ""
            try:
                with torch.no_grad():
                    rt.decode(codes)
                if args.device == "cuda":
                    torch.cuda.synchronize()
                failed = ""
            except Exception as e:  # noqa: BLE001 - the probe reports what failed and goes on
                failed = f"; failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
            print(f"gn probe: {name} batch {B} latents {side}x{side}: {group_norm.fallbacks['cuda']} reference-path "
                  f"calls" + (f"; first: {handler.message}" if handler.message else "") + failed, flush=True)


if __name__ == "__main__":
    main()
