"""The `block_gemm` references (float32 on CPU): they are the block's LayerNorm + modulation + GEMM and
residual updates, and a row's parts combine into its LayerNorm statistics."""
import pytest
import torch
import torch.nn.functional as F

from flexvar.fast import FastRuntime, finish_step, qkv_proj
from flexvar.kernels import block_gemm as G

from conftest import rel_err


@pytest.mark.parametrize("cols", [1, 16, 64, 256])
def test_parts_combine_into_layer_norm_statistics(cols):
    """Chan's combination of per-group (sum, squared deviations) gives the row's mean and variance, also
    for rows whose mean is far from zero."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 256, generator=g) * 3 + torch.randn(7, 1, generator=g) * 40
    parts = G.row_parts_ref(x, cols)
    assert parts.shape == (256 // cols, 7, 2)
    mean, rstd = G.stats_from_parts(parts, 256, 1e-6)
    ln = F.layer_norm(x, (256,), eps=1e-6)
    assert rel_err((x - mean[:, None]) * rstd[:, None], ln) < 1e-5


def test_refs_are_the_block_halves(pipe_test):
    """ln_linear_ref and linear_residual_ref chained = the runtime's `qkv_proj` and `finish_step` (the
    block's two halves as the compiled path computes them) on rows of several images."""
    m = pipe_test.model
    cfg = m.cfg
    g = torch.Generator().manual_seed(1)
    B, l = 3, 5
    x = torch.randn(B, l, cfg.width, generator=g) * 2
    _, blocks, _ = m.modulation(torch.tensor([1, 2, cfg.null_class]))
    wqkv, bqkv, _, wproj, bproj, w1, b1, w2, b2 = FastRuntime._weights(m.blocks[0])
    mod = blocks[0]
    eps = cfg.norm_eps
    qkv = G.ln_linear_ref(x.view(B * l, -1), mod, G.SCALE1, G.SHIFT1, wqkv, bqkv, l, eps)
    assert rel_err(qkv.view(B, l, -1), qkv_proj(x, mod, wqkv, bqkv, eps)) < 1e-6
    o = torch.randn(B, l, cfg.heads, cfg.head_dim, generator=g)
    x1 = G.linear_residual_ref(o.view(B * l, -1), wproj, bproj, x.view(B * l, -1), mod, G.GAMMA1, l)
    h = G.ln_linear_ref(x1, mod, G.SCALE2, G.SHIFT2, w1, b1, l, eps, gelu=True)
    x2 = G.linear_residual_ref(h, w2, b2, x1, mod, G.GAMMA2, l)
    ref = finish_step(x, mod, o.transpose(1, 2), wproj, bproj, w1, b1, w2, b2, eps)
    assert rel_err(x2.view(B, l, -1), ref) < 1e-6


def test_cpu_fallbacks_update_in_place():
    """Without the kernels (CPU) linear_residual updates x in place and returns its parts; ln_linear and
    row_parts are their references."""
    g = torch.Generator().manual_seed(2)
    M, C, N = 6, 128, 96
    x = torch.randn(M, C, generator=g)
    a = torch.randn(M, N, generator=g)
    w, b = torch.randn(C, N, generator=g), torch.randn(C, generator=g)
    mod = torch.randn(2, 6, C, generator=g)
    want = G.linear_residual_ref(a, w, b, x, mod, G.GAMMA2, 3)
    parts = G.linear_residual(a, w, b, x, mod, G.GAMMA2, 3)
    assert torch.equal(x, want) and torch.allclose(parts, G.row_parts_ref(want, 64))
    assert torch.equal(G.row_parts(x), G.row_parts_ref(x, C))
    w2 = torch.randn(N, C, generator=g)
    assert torch.equal(G.ln_linear(x, parts, mod, G.SCALE1, G.SHIFT1, w2, b[:N], 3, 1e-6),
                       G.ln_linear_ref(x, mod, G.SCALE1, G.SHIFT1, w2, b[:N], 3, 1e-6))


def test_gemm_config_fills_the_gpu():
    """Column tiles narrow until the grid has 128 programs (down to 32 columns)."""
    assert G.gemm_config(512, 3072, 1024)[1] == 128  # 8 x 24 programs
    assert G.gemm_config(512, 1024, 1024)[1] == 64  # 8 x 16
    assert G.gemm_config(50, 1024, 4096)[1] == 32  # 1 x 32: the narrowest
    for M, N in [(50, 3072), (200, 4096), (338, 1536)]:
        bm, bn, bk, _, _ = G.gemm_config(M, N, 1024)
        assert N % bn == 0 and 1024 % bk == 0 and bm == 64


def test_block_gemm_rows_option(pipe_test):
    """block_gemm_rows bounds the fused path; on CPU (no kernels) it is off."""
    rt = FastRuntime(pipe_test.model, pipe_test.vae, use_graphs=False)
    assert rt.block_gemm_rows == 0 and not rt.pdl
    x = torch.zeros(2, 40, pipe_test.model.cfg.width)
    assert not rt._block_gemms(x, torch.zeros(1, 2, 8, 2, pipe_test.model.cfg.heads, pipe_test.model.cfg.head_dim))
