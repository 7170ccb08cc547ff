"""Probe (session 6): the guided_sample kernel's time by part, from the op with filters switched off.
full - (top_p = 0) = the top-p bisection; (top_p = 0) - (no filters) = the top-k radix select; no filters =
loads, guidance, exp and the draw. Shapes of d16 256-10: B1 step 1 / step 10, B32 step 10; V = 8912."""
import torch

import flexvar.kernels as K


def time_us(fn, reps=50):
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
seed = torch.tensor([7], device="cuda")
for name, (B2, l) in {"B1 step1": (2, 1), "B1 step10": (2, 256), "B32 step10": (64, 256)}.items():
    logits = torch.randn(B2, l, 8912, device="cuda") * 3
    t = {k: time_us(lambda: torch.ops.flexvar.guided_sample(logits, seed, 2.5, 0, tk, tp, 3))
         for k, (tk, tp) in {"full": (900, 0.95), "top_k only": (900, 0.0), "no filter": (0, 0.0),
                             "greedy": (1, 0.0)}.items()}
    print(f"sample_probe {name} rows={B2 // 2 * l}: " + ", ".join(f"{k} {v:.1f} us" for k, v in t.items()), flush=True)
