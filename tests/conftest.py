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
