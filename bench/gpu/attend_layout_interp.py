"""`attend_step` (the Triton kernel) under Triton's interpreter on the CPU, on token-major caches (L, B, H, d) and on
head-major ones (stored (B, H, L, d), passed as (L, B, H, d) views, as `KVCache(head_major=True)` gives them), fp16,
against the float32 reference: whether the two layouts give the same bits (output and cache writes). For a machine
without a GPU but with Triton installed (the interpreter mishandles bf16, so fp16 only); on a GPU,
`test_attend_step_head_major_cache`. Also `write_cache=False` (a generation's last step): the same output, the caches
untouched. Exits 1 if the layouts differ, write_cache=False changes anything it should not, or an error exceeds 2e-3
(fp16 gives ~5e-4).

    TRITON_INTERPRET=1 python3 bench/gpu/attend_layout_interp.py
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from flexvar.kernels import attention as A
from flexvar.kv_cache import head_major_copy


def main() -> None:
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("attend_layout_interp: run with TRITON_INTERPRET=1")
    A.step_kernel_available = lambda *a: True  # CPU tensors: the interpreter runs the kernel
    torch.manual_seed(0)
    failed = False
    for B, n, H, d, start in [(2, 4, 2, 64, 5), (3, 9, 2, 64, 14), (2, 20, 3, 32, 30)]:
        L = start + n + 3
        qkv = (torch.randn(B, n, 3 * H * d) * 3).half()
        scale = torch.rand(H, 1) * 20 + 1
        kc, vc = F.normalize(torch.randn(L, B, H, d), dim=-1).half(), torch.randn(L, B, H, d).half()
        outs = {}
        for head_major in (False, True):
            k, v = kc.clone(), vc.clone()
            if head_major:
                k, v = (head_major_copy(c) for c in (k, v))
            outs[head_major] = (A.attend_step(qkv, scale, k, v, start), k.contiguous(), v.contiguous())
        kr, vr = kc.float(), vc.float()
        ref = A.attend_step_ref(qkv.float(), scale, kr, vr, start)
        same = all(torch.equal(a, b) for a, b in zip(outs[False], outs[True]))
        k3, v3 = kc.clone(), vc.clone()
        kept = (torch.equal(A.attend_step(qkv, scale, k3, v3, start, write_cache=False), outs[False][0])
                and torch.equal(k3, kc) and torch.equal(v3, vc))
        o, k, v = outs[True]
        err = ((o.float() - ref).norm() / ref.norm()).item()
        kerr = (k.float() - kr).abs().max().item()
        print(f"B={B} l={n} H={H} d={d} start={start}: layouts give the same bits {same}, relative error against "
              f"float32 {err:.1e}, cache keys max error {kerr:.1e}; write_cache=False: same output, caches untouched "
              f"{kept}", flush=True)
        failed |= not (same and kept and err < 2e-3 and kerr < 2e-3 and torch.equal(v, vr.half()))
    if failed:
        raise SystemExit("attend_layout_interp: a check failed")


if __name__ == "__main__":
    main()
