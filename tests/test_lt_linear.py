"""`lt_linear` (cuBLASLt GEMMs with tuned algorithms) on CPU: where the fast runtime routes its GEMMs, which shapes a
plan tunes, and the file of saved choices. Its CUDA side is tested in test_gpu_kernels.py."""
import json
import math

import pytest
import torch

import flexvar.kernels.lt_linear as lt
from flexvar.fast import FastRuntime
from flexvar.schedule import Schedule

from conftest import rel_err


def test_fast_lt_gemms_route_every_unsplit_gemm(pipe_tiny, monkeypatch):
    """With lt_gemms, every block GEMM of a per-block step that is not split-K is one `lt_linear` call of the shape
    `gemm_shapes` lists (fc1 with the GELU), and the logits are those of F.linear's path."""
    from flexvar.bench.precision import fast_teacher_forced
    m = pipe_tiny.model
    sched = Schedule.parse("1,2,3,5")  # 4, 16, 36, 100 rows at batch 2: the first two split-K below
    g = torch.Generator().manual_seed(0)
    codes = [torch.randint(0, m.cfg.vocab_size, (2, h, w), generator=g) for h, w in sched]
    on = FastRuntime(m, pipe_tiny.vae, use_graphs=False, skinny_rows=20, lt_gemms=True)
    off = FastRuntime(m, pipe_tiny.vae, use_graphs=False, skinny_rows=20)
    assert on.lt_gemms and not off.lt_gemms
    calls = []
    op = lt.lt_linear
    monkeypatch.setattr(lt, "lt_linear", lambda x, w, b, gelu=False: calls.append(
        (x.shape[0], w.shape[0], w.shape[1], gelu)) or op(x, w, b, gelu))
    a = fast_teacher_forced(on, [1, 2], codes, sched)
    C, hidden = m.cfg.width, m.cfg.mlp_hidden
    want = on.gemm_shapes(sched, 2, first_from_table=False)
    assert want == [(4, 3 * C, C, False), (4, hidden, C, True), (16, 3 * C, C, False), (16, hidden, C, True),
                    (36, 3 * C, C, False), (36, hidden, C, True), (36, C, C, False), (36, C, hidden, False),
                    (100, 3 * C, C, False), (100, hidden, C, True), (100, C, C, False), (100, C, hidden, False)]
    assert sorted(calls) == sorted(want * m.cfg.depth)
    b = fast_teacher_forced(off, [1, 2], codes, sched)
    assert len(calls) == len(want) * m.cfg.depth  # none with lt_gemms off
    assert all(rel_err(x, y) < 1e-6 for x, y in zip(a, b))


def test_gemm_shapes_of_batch_1_at_256_10(pipe_tiny):
    """Batch 1, 256-10 (2, 8, 18, ..., 512 rows with guidance): the first step from the table and the second in
    `small_step` (<= 8 rows) run no block GEMM; the projection and fc2 only above the split-K limit."""
    rt = FastRuntime(pipe_tiny.model, pipe_tiny.vae, use_graphs=False, fused_small_steps=True, skinny_rows=128)
    C, hidden = pipe_tiny.model.cfg.width, pipe_tiny.model.cfg.mlp_hidden
    shapes = rt.gemm_shapes(Schedule.parse("256-10"), 1, first_from_table=True)
    assert {s[0] for s in shapes} == {18, 32, 50, 72, 128, 200, 338, 512}
    assert sorted(M for M, N, K, _ in shapes if (N, K) == (C, C)) == [200, 338, 512]
    assert sorted(M for M, N, K, _ in shapes if (N, K) == (C, hidden)) == [200, 338, 512]
    assert all(gelu == (N == hidden) for _, N, _, gelu in shapes)
    # without the table the first step runs the per-block path where it has more than 8 rows (batch 8: 16 rows)
    assert {s[0] for s in rt.gemm_shapes(Schedule.parse("256-10"), 1, first_from_table=False)} == {s[0] for s in shapes}
    assert 16 in {s[0] for s in rt.gemm_shapes(Schedule.parse("256-10"), 8, first_from_table=False)}
    assert 16 not in {s[0] for s in rt.gemm_shapes(Schedule.parse("256-10"), 8, first_from_table=True)}


def test_lt_gemms_default_off_on_cpu(pipe_tiny):
    assert not FastRuntime(pipe_tiny.model, pipe_tiny.vae).lt_gemms
    assert lt.tune([(18, 64, 64, False)], torch.float16, "cpu") == {}  # nothing to choose without the CUDA side


def test_lt_choices_file(tmp_path, monkeypatch):
    """Choices are read per machine; a file that does not parse is ignored (and replaced on save); saving leaves
    one whole file and no temporary one."""
    monkeypatch.setenv("FLEXVAR_KERNELS_CACHE", str(tmp_path))
    monkeypatch.setitem(lt._state, "saved", None)
    path = tmp_path / "lt_algos.json"
    path.write_text('{"H100|sm90": {"18,64,64,float16,0": 3')  # cut short
    assert lt._saved("H100|sm90") == {}
    lt._saved("H100|sm90")["200,3072,1024,float16,0"] = 4
    lt._saved("A100|sm80")["512,1024,4096,bfloat16,1"] = 1
    lt._save()
    assert json.loads(path.read_text()) == {"A100|sm80": {"512,1024,4096,bfloat16,1": 1},
                                            "H100|sm90": {"200,3072,1024,float16,0": 4}}
    assert [p.name for p in tmp_path.iterdir()] == ["lt_algos.json"]
    monkeypatch.setitem(lt._state, "saved", None)  # as a new process reads it
    assert lt._saved("H100|sm90") == {"200,3072,1024,float16,0": 4}


@pytest.mark.parametrize("gelu", [False, True])
def test_lt_linear_ref_is_linear_then_gelu(gelu):
    g = torch.Generator().manual_seed(int(gelu))
    x, w, b = torch.randn(7, 32, generator=g), torch.randn(48, 32, generator=g), torch.randn(48, generator=g)
    y = x.double() @ w.double().t() + b.double()
    want = 0.5 * y * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (y + 0.044715 * y ** 3))) if gelu else y
    assert rel_err(torch.ops.flexvar.lt_linear(x, w, b, int(gelu)), want) < 1e-6


def test_choose_keeps_the_first_unless_clearly_faster():
    """The fastest candidate only where it beats the heuristic's first by the margin; a failed one (inf) never."""
    assert lt.choose([10.0, 9.8, 9.9], 0.03) == 0  # 2 % faster: not enough
    assert lt.choose([10.0, 9.8, 9.6], 0.03) == 2  # 4 % faster
    assert lt.choose([10.0, 8.0, 9.0, 8.5], 0.03) == 1
    assert lt.choose([math.inf, 5.0, 6.0], 0.03) == 1  # the first failed to launch
    assert lt.choose([10.0, math.inf], 0.03) == 0
    assert lt.choose([7.0], 0.03) == 0
