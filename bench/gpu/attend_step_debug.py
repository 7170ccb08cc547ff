"""Where attend_step differs from attend_step_ref on the GPU (session 7 debugging of one failing case)."""
import sys

import torch

from flexvar.kernels.attention import attend, attend_config, attend_step, attend_step_ref

print("tf32", torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision())
for B, l, H, d, L, start, smax, cfg in [(64, 169, 16, 64, 680, 255, 20, (64, 64, 4, st)) for st in (1, 2, 3)] + [(64, 169, 16, 64, 680, 255, 1, 0),
                                   (4, 169, 16, 64, 680, 255, 20, 0), (64, 169, 2, 64, 680, 255, 20, 0),
                                   (64, 64, 16, 64, 680, 255, 20, 0), (64, 169, 16, 64, 680, 0, 20, 0),
                                   (2, 256, 16, 64, 680, 424, 20, 0)]:
    cfg = cfg if isinstance(cfg, tuple) else None
    g = torch.Generator("cuda").manual_seed(B * l + start)
    qkv = (torch.randn(B, l, 3 * H * d, device="cuda", generator=g) * 3).half()
    scale = torch.rand(H, 1, device="cuda", generator=g) * smax + 1
    kc = torch.nn.functional.normalize(torch.randn(L, B, H, d, device="cuda", generator=g), dim=-1).half()
    vc = torch.randn(L, B, H, d, device="cuda", generator=g).half()
    kr, vr = kc.clone(), vc.clone()
    ref = attend_step_ref(qkv.double(), scale.double(), kr.double(), vr.double(), start)
    k2, v2 = kc.clone(), vc.clone()
    out = attend_step(qkv, scale, k2, v2, start, cfg)
    torch.cuda.synchronize()
    err = (out.double() - ref).abs()
    per_bl = err.amax((2, 3))
    bad = (per_bl > 0.05).nonzero()
    k3, v3 = kc.clone(), vc.clone()
    from flexvar.kernels import qk_norm_cache_ref
    q = qk_norm_cache_ref(qkv, scale, k3, v3, start)
    two = attend(q, k3, v3, start + l)
    e2 = ((two.double() - ref).norm() / ref.norm()).item()
    print(f"B={B} l={l} H={H} start={start} smax={smax} cfg={cfg or attend_config(l)}: "
          f"rel {(err.norm() / ref.norm()).item():.2e}, two-kernel rel {e2:.2e}, bad (b, t) {bad.shape[0]}: "
          f"{bad[:8].tolist()}, k cache max diff {(k2.double() - k3.double()).abs().max().item():.2e}")
    sys.stdout.flush()
