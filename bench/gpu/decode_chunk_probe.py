"""Probe: the tokenizer decode of 32 images (16x16 codes -> 256x256) in chunks of c images, one after another, so
that a chunk's activations at the 256x256 level (16.8 MB an image in fp16 at 128 channels) can stay in the H100's
50 MB L2 between the memory-bound passes (GroupNorm statistics and apply, residual sums) and the convolutions that
read them. In one CUDA graph per variant, fp16, the fast runtime's decoder: `op` its default (the GroupNorm op,
the decoder's end as `group_norm_silu_taps`), `notaps` the GroupNorm op with norm_out + conv_out as the op and
cuDNN's convolution, `ind` Inductor's GroupNorm (what batches under 8 run); `op0` / `op1` the default with the
GroupNorm kernels' programs chunk by chunk across the images (session 20's order) / image by image
(`group_norm.L2_ORDER` False / True; the others take the module's default).

    python3 bench/gpu/decode_chunk_probe.py [--batch 32] [--variants 32:op,32:notaps,8:op,4:op,2:op,4:ind,2:ind]
"""
from __future__ import annotations

import argparse

import torch

from flexvar.config import FlexVARConfig, VQVAEConfig
from flexvar.fast import FastRuntime
from flexvar.kernels import group_norm
from flexvar.kernels.lt_linear import graph_us
from flexvar.random_weights import random_tokenizer, random_transformer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--variants", default="32:op,32:notaps,32:op,32:notaps,8:op,4:op,2:op,4:ind,2:ind")
    args = ap.parse_args()
    dt = torch.float16
    model = random_transformer(FlexVARConfig.from_name("d16"), device="cuda").to(dt)
    vae = random_tokenizer(VQVAEConfig.from_name("vq16"), device="cuda").to(dt)
    rts = {"op": FastRuntime(model, vae), "notaps": FastRuntime(model, vae, conv_out_taps=False)}
    rts["ind"] = rts["op0"] = rts["op1"] = rts["op"]
    default_order = group_norm.L2_ORDER
    gen = torch.Generator("cuda").manual_seed(0)
    B = args.batch
    codes = torch.randint(0, vae.cfg.codebook_size, (B, 16, 16), device="cuda", generator=gen)
    out = torch.empty(B, 256, 256, 3, device="cuda", dtype=torch.uint8)

    def run(rt: FastRuntime, c: int):
        for i in range(0, B, c):
            out[i:i + c] = rt.decode(codes[i:i + c])

    variants = [(int(v.split(":")[0]), v.split(":")[1]) for v in args.variants.split(",")]
    ref = None
    with torch.no_grad():
        for c, mode in variants:
            rt = rts[mode]
            rt.group_norm_min_batch = 10 ** 9 if mode == "ind" else 1
            group_norm.L2_ORDER = {"op0": False, "op1": True}.get(mode, default_order)
            run(rt, c)
            torch.cuda.synchronize()
            if ref is None:
                ref = out.clone()
            diff = (out.int() - ref.int()).abs().max().item()
            us = graph_us(lambda i: run(rt, c), 3, 7)
            print(f"B={B} chunk {c:3d} {mode:6s}: {us / 1e3:7.3f} ms "
                  f"(max |diff| against the first {diff} of 255)", flush=True)


if __name__ == "__main__":
    main()
