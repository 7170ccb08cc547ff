"""AOTInductor packages (CPU here): greedy codes equal the torch runtime's; packages are named by
what they depend on. One bucket covering 1-4096 tokens keeps the compile time of CI short."""
import json

import pytest
import torch

from flexvar import engine_runtime
from flexvar.schedule import Schedule

from conftest import assert_edits_match_reference


@pytest.fixture(scope="module")
def aoti(aoti_artifacts):
    return aoti_artifacts


@pytest.mark.parametrize("spec", ["256-10", "256-13", "512-12", "1x2,2x3,4x6,6x10"], ids=str)
def test_aoti_greedy_codes_equal_torch(pipe_test, aoti, spec):
    _, eng = aoti
    sched = Schedule.parse(spec)
    ref = pipe_test.generate([2, 9], sched, cfg=2.5, top_k=1, top_p=0.0, seed=0, fast=False)
    labels = pipe_test.labels_tensor([2, 9])
    p = engine_runtime.SamplingParams(cfg=2.5, top_k=1, top_p=0.0)
    codes = engine_runtime.generate_codes(pipe_test.model, pipe_test.vae.quantize, eng, labels, sched, p,
                                          torch.Generator().manual_seed(0))
    for si, (a, b) in enumerate(zip(codes, ref.codes)):
        assert torch.equal(a, b), f"step {si + 1}"
    img = engine_runtime.decode(eng, codes[-1])
    assert (img.int() - ref.images.int()).abs().max() <= 1


def test_aoti_manifest_and_names(aoti):
    d, eng = aoti
    m = json.loads((d / "manifest.json").read_text())
    a = m["aoti"]
    assert a["device"] == "cpu" and set(a["buckets"]) == {"t4096"}
    f = a["buckets"]["t4096"]["file"]
    assert f.startswith(f"transformer_step-{m['fingerprint']}-float32-t4096-torch") and f.endswith("-cpu.pt2")
    assert (d / f).exists() and (d / a["decoder"]).exists() and (d / a["encoder"]).exists()
    assert not list(d.glob("*.tmp*"))


def test_edits_on_aoti_reuse_the_exported_buckets(pipe_test, aoti):
    """An existing AOTInductor directory is used with the buckets it was exported with (no recompile),
    and the edits run on it with the reference's codes."""
    d, _ = aoti
    before = sorted(p.name for p in d.glob("*.pt2"))
    assert_edits_match_reference(pipe_test, "aoti", d, seed=5)
    assert sorted(p.name for p in d.glob("*.pt2")) == before


def test_aoti_without_encoder_generates_and_refuses_encoding(pipe_test, aoti_artifacts, tmp_path):
    """encoder=False (what the C++ host needs) reuses the packages, skips the encoder and says so when
    image-to-image asks for it."""
    import shutil

    from flexvar.export import ArtifactError
    d = tmp_path / "gen-only"
    shutil.copytree(aoti_artifacts[0], d)
    for p in d.glob("encoder-*.pt2"):
        p.unlink()
    eng = engine_runtime.EngineSet(pipe_test.model, pipe_test.vae, "aoti", d, pipe_test.device, log=lambda *a: None,
                                   encoder=False)
    assert eng.encoder is None and not list(d.glob("encoder-*.pt2"))
    assert json.loads((d / "manifest.json").read_text())["aoti"]["encoder"] is None
    sched = Schedule.parse("1,2,4")
    p = engine_runtime.SamplingParams(cfg=2.5, top_k=1, top_p=0.0)
    codes = engine_runtime.generate_codes(pipe_test.model, pipe_test.vae.quantize, eng, pipe_test.labels_tensor([3]),
                                          sched, p, torch.Generator().manual_seed(0))
    ref = pipe_test.generate([3], sched, cfg=2.5, top_k=1, top_p=0.0, seed=0, fast=False)
    assert all(torch.equal(a, b) for a, b in zip(codes, ref.codes))
    with pytest.raises(ArtifactError, match="without the encoder"):
        engine_runtime.encode_latent(eng, torch.zeros(1, 64, 64, 3, dtype=torch.uint8))


def test_libstdcxx_promoted_to_global_scope():
    """What CUDA packages need to load from Python (engines/aoti.py): after libstdcxx_global(), the
    shared libstdc++ that torch loaded answers global symbol lookups, as in a C++ program. Run in a
    fresh process: the promotion cannot be undone."""
    import subprocess
    import sys
    code = ("import ctypes, torch\n"
            "from flexvar.engines.aoti import libstdcxx_global\n"
            "sym = '_ZNSt6localeC1Ev'  # std::locale::locale()\n"
            "before = hasattr(ctypes.CDLL(None), sym)\n"
            "ok = libstdcxx_global()\n"
            "print(before, ok, hasattr(ctypes.CDLL(None), sym))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-500:]
    before, ok, after = out.stdout.split()
    assert before == "False", "torch now loads libstdc++ globally: libstdcxx_global may be unnecessary"
    assert ok == "True" and after == "True", out.stdout


def test_corrupt_package_is_one_line(tmp_path):
    """A package AOTInductor cannot open is an ArtifactError naming the file, not the loader's exception."""
    from flexvar.engines.aoti import AOTIEngine
    from flexvar.export import ArtifactError
    bad = tmp_path / "decoder-x.pt2"
    bad.write_bytes(b"PK\x03\x04 not a package")
    with pytest.raises(ArtifactError, match=r"decoder-x\.pt2: AOTInductor cannot load it \(.*--rebuild"):
        AOTIEngine(torch.device("cpu"), ["codes"], ["image"]).load(str(bad))
