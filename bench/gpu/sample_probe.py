"""Probe (session 6; session 18: by kernel): the guided_sample op's time per launch on d16 256-10's shapes, V = 8912,
top-k 900, top-p 0.95 (the runtime's rule: already-guided logits + the head's bias), with filters switched off to
split it: full - (top_p = 0) = the top-p cut; (top_p = 0) - (no filters) = the top-k radix select; no filters =
loads, exp and the draw. `FLEXVAR_SAMPLE_KERNEL` picks the kernel per line: block (one block of 1024 threads per
row, persistent from 4 rows per SM: sessions 6-17), rows (the many-rows kernel, 256 threads), rows512, auto."""
import os
import sys

import torch

import flexvar.kernels as K


def time_us(fn, reps=30):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        fn()
    b.record()
    b.synchronize()
    return 1000 * a.elapsed_time(b) / reps


assert K.load()
kernels = sys.argv[1].split(",") if len(sys.argv) > 1 else ["block", "rows", "rows512", "auto"]
seed = torch.tensor([7], device="cuda")
none = K.RULE_CODES["none"]
bias = torch.randn(8912, device="cuda")
shapes = {"B1 step8": (1, 100), "B1 step10": (1, 256), "B8 step10": (8, 256), "B32 step4": (32, 16),
          "B32 step5": (32, 25), "B32 step7": (32, 64), "B32 step9": (32, 169), "B32 step10": (32, 256)}
for name, (B, tokens) in shapes.items():
    logits = torch.randn(B, tokens, 8912, device="cuda") * 3
    for kern in kernels:
        os.environ["FLEXVAR_SAMPLE_KERNEL"] = kern
        t = {k: time_us(lambda: torch.ops.flexvar.guided_sample(logits, seed, 2.5, none, tk, tp, 3, bias))
             for k, (tk, tp) in {"full": (900, 0.95), "top_k only": (900, 0.0), "no filter": (0, 0.0),
                                 "greedy": (1, 0.0)}.items()}
        print(f"sample_probe {name} rows={B * tokens} {kern}: " + ", ".join(f"{k} {v:.1f} us" for k, v in t.items()),
              flush=True)
os.environ.pop("FLEXVAR_SAMPLE_KERNEL")
