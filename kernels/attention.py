"""Attention of one step's queries over the KV cache prefix, as Triton kernels (`attend`, `attend_step`).

The queries are already L2-normalised and scaled (the `qk_norm_cache` kernel wrote them, and the
normalised keys, into the cache), so the kernel computes plain softmax(q k^T) v with scale 1 over
the first `end` cached tokens: no mask (a step's tokens see every token of their own and earlier
steps). One program per (BLOCK_M queries, batch row, head): a flash-attention loop over the keys in
blocks of BLOCK_N, scores and the running softmax in float32, probabilities rounded to the operands'
dtype for the second product (as the flash and cuDNN kernels do). It reads the strided cache views
in place and writes (B, l, H, d) contiguously, with no memset and no workspace, so it replaces
cuDNN's SDPA (whose memset node and its gap cost ~5 us per call at batch 1) inside the fast
runtime's CUDA graph. fp16/bf16 only; float32 keeps SDPA's memory-efficient kernel.

`attend_step` also does the block's attention prologue in the same kernel (what `qk_norm_cache`
does): it reads the step's raw qkv (B, l, 3C), L2-normalises q (and scales it) and the step's own
keys on the fly; the earlier tokens' keys come from the cache. Extra programs of the same launch
write the step's normalised keys and values into the cache (the attention programs never read them
there), so no attention program waits on that write. One kernel per block instead of two, and q is
never written out.

`attend_ref` and `attend_step_ref` are the definitions; Triton is optional (absent on CPU builds of torch): `attend`
falls back to the reference where the kernel cannot run.
"""
from __future__ import annotations

import torch

try:  # CPU builds of torch come without Triton
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None


def attend_ref(q_BlHd: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, end: int) -> torch.Tensor:
    """Plain PyTorch, float32: softmax(q k^T) v over the first `end` tokens of caches (L, B, H, d),
    scale 1: (B, l, H, d) in q's dtype."""
    q = q_BlHd.float().transpose(1, 2)  # (B, H, l, d)
    k = k_cache[:end].float().permute(1, 2, 3, 0)  # (B, H, d, end)
    v = v_cache[:end].float().permute(1, 2, 0, 3)  # (B, H, end, d)
    o = torch.softmax(q @ k, dim=-1) @ v
    return o.transpose(1, 2).to(q_BlHd.dtype)


def attend_step_ref(qkv_BlC3: torch.Tensor, scale_H: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                    start: int) -> torch.Tensor:
    """Plain PyTorch: `qk_norm_cache_ref` (q/k norms, q scale, the step's keys/values written into the
    caches at [start, start + l)) then `attend_ref` over the first start + l tokens: (B, l, H, d)."""
    from . import qk_norm_cache_ref  # here: the package imports this module
    q = qk_norm_cache_ref(qkv_BlC3, scale_H, k_cache, v_cache, start)
    return attend_ref(q, k_cache, v_cache, start + qkv_BlC3.shape[1])


def attend_config(l: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) for a step of l queries: 64-query blocks, 16 for steps
    of at most 16 tokens. The fastest or within 10 % of it at every step of 256-10 at batch 1 and 32 on the H100
    (`flexvar.bench.attn_backends --sweep`, 34 configurations); smaller blocks that give every SM more
    programs lose at batch 1 (each program re-reads the keys), 128-query blocks lose at batch 32. Steps of 17-32
    tokens take 32-key blocks in a 2-stage pipeline (session 19's sweep, step 5 of 256-10: 13.8 against 20.5 us
    at batch 32, 3.7 against 4.4 at batch 1)."""
    if l <= 16:
        return 16, 32, 4, 2
    if l <= 32:
        return 64, 32, 4, 2
    return 64, 64, 4, 3


def kernel_available(q: torch.Tensor) -> bool:
    """Whether `attend` runs the Triton kernel for these queries."""
    return (triton is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)
            and q.shape[-1] in (16, 32, 64, 128) and q.stride(-1) == 1)


def attend(q_BlHd: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, end: int,
           config: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """softmax(q k^T) v over the first `end` cached tokens: (B, l, H, d) contiguous. The Triton kernel
    where `kernel_available`, else `attend_ref`. config overrides `attend_config` (benchmarks)."""
    if not kernel_available(q_BlHd) or k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        return attend_ref(q_BlHd, k_cache, v_cache, end)
    B, l, H, d = q_BlHd.shape
    o = torch.empty(B, l, H, d, device=q_BlHd.device, dtype=q_BlHd.dtype)
    bm, bn, warps, stages = config or attend_config(l)
    grid = (triton.cdiv(l, bm), B * H)
    _attend_kernel[grid](q_BlHd, k_cache, v_cache, o, l, end, H,
                         *q_BlHd.stride()[:3], *k_cache.stride()[:3], *v_cache.stride()[:3], *o.stride()[:3],
                         BLOCK_M=bm, BLOCK_N=bn, D=d, num_warps=warps, num_stages=stages)
    return o


def step_kernel_available(qkv_BlC3: torch.Tensor, k_cache: torch.Tensor) -> bool:
    """Whether `attend_step` runs the Triton kernel for this step."""
    return (triton is not None and qkv_BlC3.is_cuda and qkv_BlC3.dtype in (torch.float16, torch.bfloat16)
            and k_cache.dtype == qkv_BlC3.dtype and k_cache.shape[-1] in (16, 32, 64, 128)
            and qkv_BlC3.stride(-1) == 1 and k_cache.stride(-1) == 1)


def attend_step(qkv_BlC3: torch.Tensor, scale_H: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                start: int, config: tuple[int, int, int, int] | None = None, write_cache: bool = True) -> torch.Tensor:
    """A block's attention from its raw qkv (B, l, 3C): q/k norms, q scale, the step's keys and values
    written into the caches (L, B, H, d) at [start, start + l), attention over [0, start + l):
    (B, l, H, d) contiguous. The Triton kernel where `step_kernel_available`, else `attend_step_ref`.
    scale_H: the per-head q scale (H or (H, 1)), float32. config overrides `attend_config` (benchmarks).
    write_cache=False lets the kernel leave the caches' [start, start + l) as they were (a generation's last
    step: no later step reads them, and the kernel takes the step's own keys from qkv); the output is the same."""
    if not step_kernel_available(qkv_BlC3, k_cache) or v_cache.stride(-1) != 1:
        return attend_step_ref(qkv_BlC3, scale_H, k_cache, v_cache, start)
    B, l = qkv_BlC3.shape[:2]
    H, d = k_cache.shape[2:]
    o = torch.empty(B, l, H, d, device=qkv_BlC3.device, dtype=qkv_BlC3.dtype)
    bm, bn, warps, stages = config or attend_config(l)
    n_qb = triton.cdiv(l, bm)
    # the attention programs, then the programs that write the step's keys and values into the caches
    grid = (n_qb + (triton.cdiv(l, bn) if write_cache else 0), B * H)
    _attend_step_kernel[grid](qkv_BlC3, scale_H.float().reshape(H).contiguous(), k_cache, v_cache, o, l, start, H, n_qb,
                              *qkv_BlC3.stride()[:2], *k_cache.stride()[:3], *v_cache.stride()[:3], *o.stride()[:3],
                              BLOCK_M=bm, BLOCK_N=bn, D=d, num_warps=warps, num_stages=stages)
    return o


if triton is not None:
    _LOG2E = tl.constexpr(1.4426950408889634)

    @triton.jit
    def _key_block(q, k, v, valid, m_i, l_i, acc):
        """One block of keys in the flash loop: scores s = q k (k (D, BLOCK_N), scale already in q), the running
        max m_i of s, the running sum l_i of exp(s - m_i) and the unnormalised output acc updated; exponentials as
        exp2(s log2(e) - m log2(e)), one fused multiply-add an element; probabilities rounded to v's dtype for the
        second product; the columns where `valid` is false dropped."""
        s = tl.where(valid[None, :], tl.dot(q, k), float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_scaled = m_new * _LOG2E
        alpha = tl.exp2(m_i * _LOG2E - m_scaled)
        p = tl.exp2(s * _LOG2E - m_scaled[:, None])
        return m_new, l_i * alpha + tl.sum(p, 1), acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)

    @triton.jit
    def _cache_block(q, kp, vp, n0, end, skt, svt, m_i, l_i, acc,
                     BLOCK_N: tl.constexpr, D: tl.constexpr):
        """`_key_block` over the cached keys/values [n0, n0 + BLOCK_N), those from `end` on dropped."""
        rn = n0 + tl.arange(0, BLOCK_N)
        rd = tl.arange(0, D)
        nmask = rn < end
        k = tl.load(kp + rn[None, :] * skt + rd[:, None], mask=nmask[None, :], other=0.0)  # (D, BLOCK_N)
        v = tl.load(vp + rn[:, None] * svt + rd[None, :], mask=nmask[:, None], other=0.0)  # (BLOCK_N, D)
        return _key_block(q, k, v, nmask, m_i, l_i, acc)

    @triton.jit
    def _raw_key_block(q, xp, t0, n_step, sxt, C, m_i, l_i, acc,
                       BLOCK_N: tl.constexpr, D: tl.constexpr):
        """`_key_block` over the step's own keys [t0, t0 + BLOCK_N) (those from n_step on dropped), read raw from qkv
        and L2-normalised here: one reciprocal a key, then products."""
        rt = t0 + tl.arange(0, BLOCK_N)
        rd = tl.arange(0, D)
        tmask = rt < n_step
        k = tl.load(xp + C + rt[None, :] * sxt + rd[:, None], mask=tmask[None, :], other=0.0).to(tl.float32)
        v = tl.load(xp + 2 * C + rt[:, None] * sxt + rd[None, :], mask=tmask[:, None], other=0.0)
        k = (k * (1.0 / tl.maximum(tl.sqrt(tl.sum(k * k, 0)), 1e-12))[None, :]).to(v.dtype)
        return _key_block(q, k, v, tmask, m_i, l_i, acc)

    @triton.jit
    def _attend_kernel(Q, K, V, O, l, end, H,
                       sqb, sqt, sqh, skt, skb, skh, svt, svb, svh, sob, sot, soh,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr):
        pid_m = tl.program_id(0)
        bh = tl.program_id(1)
        b = bh // H
        h = bh % H
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rd = tl.arange(0, D)
        qmask = rm[:, None] < l
        q = tl.load(Q + b * sqb + h * sqh + rm[:, None] * sqt + rd[None, :], mask=qmask, other=0.0)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D], tl.float32)
        kp = K + b * skb + h * skh
        vp = V + b * svb + h * svh
        for n0 in range(0, end, BLOCK_N):
            m_i, l_i, acc = _cache_block(q, kp, vp, n0, end, skt, svt, m_i, l_i, acc, BLOCK_N, D)
        o = acc / l_i[:, None]
        tl.store(O + b * sob + h * soh + rm[:, None] * sot + rd[None, :], o.to(O.dtype.element_ty), mask=qmask)

    @triton.jit
    def _attend_step_kernel(QKV, S, K, V, O, l, start, H, n_qb,
                            sxb, sxt, skt, skb, skh, svt, svb, svh, sob, sot, soh,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr):
        pid = tl.program_id(0)
        bh = tl.program_id(1)
        b = bh // H
        h = bh % H
        C = H * D
        rd = tl.arange(0, D)
        xp = QKV + b * sxb + h * D
        kp = K + b * skb + h * skh
        vp = V + b * svb + h * svh
        if pid >= n_qb:  # a write program: BLOCK_N of the step's normalised keys and values into the caches
            rt = (pid - n_qb) * BLOCK_N + tl.arange(0, BLOCK_N)
            tmask = rt < l
            k = tl.load(xp + C + rt[:, None] * sxt + rd[None, :], mask=tmask[:, None], other=0.0).to(tl.float32)
            k = k * (1.0 / tl.maximum(tl.sqrt(tl.sum(k * k, 1)), 1e-12))[:, None]
            tl.store(kp + (start + rt[:, None]) * skt + rd[None, :], k.to(K.dtype.element_ty), mask=tmask[:, None])
            v = tl.load(xp + 2 * C + rt[:, None] * sxt + rd[None, :], mask=tmask[:, None], other=0.0)
            tl.store(vp + (start + rt[:, None]) * svt + rd[None, :], v, mask=tmask[:, None])
        else:  # query block pid over every key: the cache's [0, start), then the step's own
            rm = pid * BLOCK_M + tl.arange(0, BLOCK_M)
            qmask = rm[:, None] < l
            q = tl.load(xp + rm[:, None] * sxt + rd[None, :], mask=qmask, other=0.0).to(tl.float32)
            q = q * (tl.load(S + h) / tl.maximum(tl.sqrt(tl.sum(q * q, 1)), 1e-12))[:, None]
            q = q.to(QKV.dtype.element_ty)
            m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
            l_i = tl.zeros([BLOCK_M], tl.float32)
            acc = tl.zeros([BLOCK_M, D], tl.float32)
            for n0 in range(0, start, BLOCK_N):  # earlier steps: normalised keys from the cache
                m_i, l_i, acc = _cache_block(q, kp, vp, n0, start, skt, svt, m_i, l_i, acc, BLOCK_N, D)
            for t0 in range(0, l, BLOCK_N):  # this step's keys: normalised here from the raw qkv
                m_i, l_i, acc = _raw_key_block(q, xp, t0, l, sxt, C, m_i, l_i, acc, BLOCK_N, D)
            o = acc / l_i[:, None]
            tl.store(O + b * sob + h * soh + rm[:, None] * sot + rd[None, :], o.to(O.dtype.element_ty), mask=qmask)
