"""Exported backends on a GPU (marked gpu): onnxruntime's CUDA execution provider with I/O binding,
and AOTInductor packages compiled for CUDA, against the torch reference runtime in float32."""
import pytest
import torch

from flexvar import Pipeline, engine_runtime
from flexvar.config import FlexVARConfig, VQVAEConfig
from flexvar.export.graphs import make_buckets
from flexvar.random_weights import random_tokenizer, random_transformer
from flexvar.sampling import SamplingParams
from flexvar.schedule import Schedule

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def pipe():
    model = random_transformer(FlexVARConfig.from_name("tiny"), seed=3, device="cuda")
    vae = random_tokenizer(VQVAEConfig.from_name("tiny"), seed=4, device="cuda")
    return Pipeline(model, vae, device="cuda", dtype=torch.float32)


def _check(pipe, eng, spec):
    sched = Schedule.parse(spec)
    ref = pipe.generate([1, 2], sched, cfg=2.5, top_k=1, top_p=0.0, seed=0, fast=False)
    p = SamplingParams(cfg=2.5, top_k=1, top_p=0.0)
    codes = engine_runtime.generate_codes(pipe.model, pipe.vae.quantize, eng, pipe.labels_tensor([1, 2]), sched, p,
                                          torch.Generator("cuda").manual_seed(0))
    for si, (a, b) in enumerate(zip(codes, ref.codes)):
        assert torch.equal(a.cpu(), b), f"step {si + 1}"
    img = engine_runtime.decode(eng, codes[-1]).cpu()
    assert (img.int() - ref.images.int()).abs().max() <= 1


@pytest.mark.parametrize("spec", ["256-10", "1x2,2x4,4x8,8x16"], ids=str)
def test_onnxruntime_cuda(pipe, tmp_path_factory, spec):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime without CUDAExecutionProvider")
    d = tmp_path_factory.getbasetemp() / "ort_cuda"
    eng = engine_runtime.EngineSet(pipe.model, pipe.vae, "onnxruntime", d, pipe.device, log=lambda *a: None)
    _check(pipe, eng, spec)


@pytest.mark.parametrize("spec", ["256-10", "1x2,2x4,4x8,8x16"], ids=str)
def test_aoti_cuda(pipe, tmp_path_factory, spec):
    d = tmp_path_factory.getbasetemp() / "aoti_cuda"
    eng = engine_runtime.EngineSet(pipe.model, pipe.vae, "aoti", d, pipe.device, log=lambda *a: None,
                                   buckets=make_buckets((4096,)))
    _check(pipe, eng, spec)


def test_aoti_cuda_package_loads_in_a_plain_process(tmp_path):
    """A CUDA package loaded through AOTIEngine in a fresh process that never imported onnxruntime
    (importing it first hides the crash that engines/aoti.libstdcxx_global fixes): it loads and computes."""
    import subprocess
    import sys
    code = '''
import sys, torch
from flexvar.engines.aoti import AOTIEngine
m = torch.nn.Linear(8, 8).cuda()
ep = torch.export.export(m, (torch.randn(2, 8, device="cuda"),))
p = torch._inductor.aoti_compile_and_package(ep, package_path=sys.argv[1])
eng = AOTIEngine("cuda", ["x"], ["y"]).load(p)
x = torch.randn(2, 8, device="cuda")
y = eng.run({"x": x})["y"]
assert "onnxruntime" not in sys.modules
assert torch.allclose(y, m(x), atol=1e-5), (y - m(x)).abs().max()
print("loaded and ran")
'''
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "linear.pt2")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and "loaded and ran" in out.stdout, (out.returncode, out.stderr[-1500:])
