"""Shared fixtures: small random models saved in the release's file formats."""
from __future__ import annotations

import pytest
import torch

from flexvar.config import FlexVARConfig, VQVAEConfig
from flexvar.random_weights import (random_tokenizer, random_transformer, save_release_tokenizer,
                                    save_release_transformer)

torch.set_num_threads(2)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ckpts(tmp_path_factory):
    """Paths of release-format files: 'test' preset (V=512) and 'tiny' preset (V=8912, the release's codebook)."""
    d = tmp_path_factory.mktemp("ckpts")
    out = {}
    for name in ("test", "tiny"):
        model = random_transformer(FlexVARConfig.from_name(name), seed=11)
        vae = random_tokenizer(VQVAEConfig.from_name(name), seed=12)
        save_release_transformer(model, d / f"var_{name}.pth", nested=True)
        save_release_transformer(model, d / f"var_{name}_plain.pth", nested=False)
        save_release_tokenizer(vae, d / f"vae_{name}.pth")
        out[f"var_{name}"] = d / f"var_{name}.pth"
        out[f"var_{name}_plain"] = d / f"var_{name}_plain.pth"
        out[f"vae_{name}"] = d / f"vae_{name}.pth"
    return out


@pytest.fixture(scope="session")
def pipe_test(ckpts):
    from flexvar import Pipeline
    return Pipeline.from_checkpoints(ckpts["var_test"], ckpts["vae_test"])


@pytest.fixture(scope="session")
def pipe_tiny(ckpts):
    from flexvar import Pipeline
    return Pipeline.from_checkpoints(ckpts["var_tiny"], ckpts["vae_tiny"])


@pytest.fixture(scope="session")
def release_test(ckpts):
    """The release-style oracle over the raw files' state_dicts."""
    from flexvar.release_eager import ReleaseSampler
    var = torch.load(ckpts["var_test"], weights_only=True)["trainer"]["var_wo_ddp"]
    vae = torch.load(ckpts["vae_test"], weights_only=True)["model"]
    return ReleaseSampler(var, vae)


@pytest.fixture(scope="session")
def release_tiny(ckpts):
    from flexvar.release_eager import ReleaseSampler
    var = torch.load(ckpts["var_tiny"], weights_only=True)["trainer"]["var_wo_ddp"]
    vae = torch.load(ckpts["vae_tiny"], weights_only=True)["model"]
    return ReleaseSampler(var, vae)


def smooth_image(H: int, W: int, seed: int = 0, batch: int | None = None) -> torch.Tensor:
    """A smooth random uint8 image (H, W, 3) (or (batch, H, W, 3)): noise on a 16x coarser grid, upsampled.
    Smooth content keeps the tokenizer's encode far from quantization ties."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch or 1, 3, max(1, H // 16), max(1, W // 16), generator=g)
    x = torch.nn.functional.interpolate(x, size=(H, W), mode="bilinear").permute(0, 2, 3, 1)
    x = (x * 255).round().to(torch.uint8)
    return x if batch else x[0]


def cmake_build(build, target: str, *defines: str):
    """Configure the repository with CMake into `build` and build one target (asserting both succeed)."""
    import os
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    for cmd in (["cmake", "-S", str(root), "-B", str(build), *defines],
                ["cmake", "--build", str(build), "-j", str(os.cpu_count() or 2), "--target", target]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return build


def assert_edits_match_reference(pipe, backend: str, engine_dir, seed: int = 3) -> None:
    """In-painting and expansion on an exported backend give the torch reference's greedy codes and images."""
    from flexvar import editing
    img = smooth_image(64, 64, seed=seed)
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[16:48, 8:40] = True
    kw = dict(top_k=1, top_p=0.0, seed=0)
    for fn, args in ((editing.inpaint, (img, mask, [4], "1,2,4")), (editing.expand, (img, [4], (64, 128)))):
        a = fn(pipe, *args, backend=backend, engine_dir=engine_dir, **kw)
        b = fn(pipe, *args, **kw)
        assert all(torch.equal(x, y) for x, y in zip(a.codes, b.codes)), fn.__name__
        assert (a.images.int() - b.images.int()).abs().max() <= 1, fn.__name__


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.fixture(scope="session")
def aoti_artifacts(tmp_path_factory, pipe_test):
    """AOTInductor artifacts (one bucket, 1-4096 tokens) of the 'test' checkpoint, with host assets."""
    from flexvar import engine_runtime
    from flexvar.export.graphs import make_buckets
    d = tmp_path_factory.mktemp("aoti")
    eng = engine_runtime.EngineSet(pipe_test.model, pipe_test.vae, "aoti", d, pipe_test.device,
                                   log=lambda *a: None, buckets=make_buckets((4096,)))
    return d, eng


@pytest.fixture(scope="session")
def models():
    """The GPU tests' 'tiny' transformer and tokenizer (random weights) on CUDA, shared by the test_gpu_* files;
    tests that change them (a dtype, options) take deep copies."""
    model = random_transformer(FlexVARConfig.from_name("tiny"), seed=3, device="cuda")
    vae = random_tokenizer(VQVAEConfig.from_name("tiny"), seed=4, device="cuda")
    return model, vae
