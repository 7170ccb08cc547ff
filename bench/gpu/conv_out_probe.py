"""Probe: the tokenizer decoder's last convolution (128 -> 3 channels, 3x3, at 256x256, channels-last fp16)
as it is and with its output channels padded with zero filters to 4-32 (the first 3 kept), at batch 1 and 32.
cuDNN runs the 3-channel one with an sm80 kernel (649 us at batch 32 in session 10's decode profile, against
~185 us to read its 537 MB input once).

    python3 bench/gpu/conv_out_probe.py
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from flexvar.bench.attn_backends import time_graph  # us per call, from a CUDA graph of repeated calls


def main() -> None:
    torch.backends.cudnn.benchmark = False
    gen = torch.Generator("cuda").manual_seed(0)
    for B in (1, 32):
        x = torch.randn(B, 128, 256, 256, device="cuda", generator=gen).half().contiguous(memory_format=torch.channels_last)
        w = (torch.randn(3, 128, 3, 3, device="cuda", generator=gen) * 0.03).half()
        b = torch.randn(3, device="cuda", generator=gen).half()
        ref = F.conv2d(x, w, b, padding=1)
        line = [f"B={B}: 3 ch {time_graph(lambda: F.conv2d(x, w, b, padding=1), 10, 7):.1f} us"]
        for n in (4, 8, 16, 32):
            wp = torch.zeros(n, 128, 3, 3, device="cuda", dtype=w.dtype).contiguous(memory_format=torch.channels_last)
            wp[:3] = w
            bp = torch.zeros(n, device="cuda", dtype=b.dtype)
            bp[:3] = b
            out = F.conv2d(x, wp, bp, padding=1)[:, :3]
            err = ((out.float() - ref.float()).abs().max() / ref.float().abs().max()).item()
            line.append(f"{n} ch {time_graph(lambda: F.conv2d(x, wp, bp, padding=1), 10, 7):.1f} us (err {err:.1e})")
        print("; ".join(line), flush=True)


if __name__ == "__main__":
    main()
