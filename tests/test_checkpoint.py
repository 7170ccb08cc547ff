import os

import pytest
import torch
from safetensors.torch import save_file

from flexvar.checkpoint import (check_pair, describe, fingerprint, load_tokenizer, load_transformer,
                                read_state_dict)
from flexvar.config import FlexVARConfig, VQVAEConfig
from flexvar.errors import CheckpointError


def test_both_transformer_layouts_load_the_same(ckpts):
    a, ia = load_transformer(ckpts["var_test"])
    b, ib = load_transformer(ckpts["var_test_plain"])
    assert ia.layout == "trainer/var_wo_ddp" and ib.layout == "state_dict"
    assert ia.config == FlexVARConfig.from_name("test")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    raw = torch.load(ckpts["var_test"], weights_only=True)["trainer"]["var_wo_ddp"]
    assert "attn_bias_for_masking" in raw and "attn_bias_for_masking" not in a.state_dict()
    assert torch.equal(a.state_dict()["blocks.1.attn.mat_qkv.weight"], raw["blocks.1.attn.mat_qkv.weight"])


def test_release_sized_config_inferred(ckpts):
    _, info = load_transformer(ckpts["var_tiny"])
    assert (info.config.depth, info.config.width, info.config.heads, info.config.vocab_size) == (2, 128, 2, 8912)
    vae, vinfo = load_tokenizer(ckpts["vae_tiny"])
    assert vinfo.config == VQVAEConfig.from_name("tiny")
    assert "quantize.codebook_used" not in vae.state_dict()


def test_safetensors(ckpts, tmp_path):
    model, _ = load_transformer(ckpts["var_test"])
    vae, _ = load_tokenizer(ckpts["vae_test"])
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "var.safetensors")
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, tmp_path / "vae.safetensors")
    m2, info = load_transformer(tmp_path / "var.safetensors")
    v2, _ = load_tokenizer(tmp_path / "vae.safetensors")
    assert info.layout == "state_dict"
    assert all(torch.equal(x, y) for x, y in zip(model.state_dict().values(), m2.state_dict().values()))
    assert all(torch.equal(x, y) for x, y in zip(vae.state_dict().values(), v2.state_dict().values()))


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-checkpoint",))


class SavedArgs:  # stands for a training script's argument object saved beside the weights
    def __init__(self):
        self.depth = 16


def test_metadata_objects_load_inert(ckpts, tmp_path):
    sd = torch.load(ckpts["var_test_plain"], weights_only=True)
    torch.save({"trainer": {"var_wo_ddp": sd}, "args": SavedArgs()}, tmp_path / "x.pth")
    _, info = load_transformer(tmp_path / "x.pth")
    assert info.config.depth == 2


def test_checkpoint_never_runs_code(ckpts, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sd = torch.load(ckpts["var_test_plain"], weights_only=True)
    torch.save({"trainer": {"var_wo_ddp": sd}, "evil": Exploit()}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="refused: it calls Python code"):
        load_transformer(tmp_path / "x.pth")
    assert not (tmp_path / "pwned-by-checkpoint").exists()


def test_bad_files(ckpts, tmp_path):
    (tmp_path / "notes.txt").write_text("this is not a checkpoint\n")
    data = ckpts["var_test"].read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pth").write_bytes(b"")
    torch.save({"foo": torch.zeros(3)}, tmp_path / "other.pth")
    cases = [
        (tmp_path / "missing.pth", load_transformer, "no such file"),
        (tmp_path / "notes.txt", load_transformer, "not a readable checkpoint"),
        (tmp_path / "trunc.pth", load_transformer, "not a readable checkpoint"),
        (tmp_path / "empty.pth", load_tokenizer, "empty file"),
        (tmp_path / "other.pth", load_transformer, "neither a FlexVAR transformer nor a tokenizer"),
        (ckpts["vae_test"], load_transformer, "is a tokenizer checkpoint, expected a transformer"),
        (ckpts["var_test"], load_tokenizer, "is a transformer checkpoint, expected a tokenizer"),
    ]
    for path, fn, msg in cases:
        with pytest.raises(CheckpointError, match=msg) as e:
            fn(path)
        assert "\n" not in str(e.value)


def test_incomplete_or_reshaped_checkpoint(ckpts, tmp_path):
    sd = torch.load(ckpts["var_test_plain"], weights_only=True)
    partial = {k: v for k, v in sd.items() if k != "blocks.1.ffn.fc2.bias"}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="missing 'blocks.1.ffn.fc2.bias'"):
        load_transformer(tmp_path / "partial.pth")
    bad = dict(sd, **{"blocks.0.attn.proj.bias": torch.zeros(7)})
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="blocks.0.attn.proj.bias has shape"):
        load_transformer(tmp_path / "bad.pth")


def test_codebook_mismatch():
    with pytest.raises(CheckpointError, match="does not match the transformer"):
        check_pair(FlexVARConfig.from_name("test"), VQVAEConfig.from_name("tiny"))
    check_pair(FlexVARConfig.from_name("tiny"), VQVAEConfig.from_name("tiny"))


def test_describe_and_fingerprint(ckpts):
    text = describe(ckpts["var_tiny"])
    assert "transformer" in text and "depth:      2" in text and "8912" in text
    assert "tokenizer" in describe(ckpts["vae_tiny"])
    assert fingerprint(ckpts["var_test"]) != fingerprint(ckpts["var_test_plain"])
    assert len(fingerprint(ckpts["var_test"])) == 16


def test_read_state_dict_kinds(ckpts):
    assert read_state_dict(ckpts["var_test"])[1:] == ("transformer", "trainer/var_wo_ddp")
    assert read_state_dict(ckpts["vae_test"])[1:] == ("tokenizer", "model")
