"""ONNX export, the artifact cache, the onnxruntime backend (CPU) and TensorRT's configuration."""
import json

import onnx
import pytest
import torch

from flexvar import Pipeline
from flexvar.cli import main
from flexvar.engines import open_engine
from flexvar.engines.tensorrt import (builder_settings, build_engines, built_buckets, plan_name, record_buckets,
                                      step_profiles)
from flexvar.export import ArtifactError, BUCKETS, DecoderGraph, TransformerStepGraph, bucket_for, export_onnx, load_manifest
from flexvar.export.graphs import make_buckets
from flexvar.schedule import Schedule

from conftest import assert_edits_match_reference


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory, pipe_test):
    d = tmp_path_factory.mktemp("engines")
    export_onnx(pipe_test.model, pipe_test.vae, d, log=lambda *a: None)
    return d


def test_onnx_files_and_manifest(engine_dir, pipe_test):
    m = load_manifest(engine_dir)
    assert m["precision"] == "float32" and len(m["fingerprint"]) == 16
    assert [b["name"] for b in m["buckets"]] == ["t64", "t256", "t1024", "t4096"]
    step = onnx.load(str(engine_dir / m["graphs"]["transformer_step"]["file"]))
    onnx.checker.check_model(step)
    names = [i.name for i in step.graph.input]
    depth = pipe_test.model.cfg.depth
    assert names == ["x", "blocks", "head"] + [f"past_k_{i}" for i in range(depth)] + [f"past_v_{i}" for i in range(depth)]
    dims = [d.dim_param for d in step.graph.input[3].type.tensor_type.shape.dim]
    assert dims[:2] == ["past", "batch"]
    onnx.checker.check_model(onnx.load(str(engine_dir / m["graphs"]["decoder"]["file"])))
    onnx.checker.check_model(onnx.load(str(engine_dir / m["graphs"]["encoder"]["file"])))
    assert m["graphs"]["transformer_step"]["file"].startswith(f"transformer_step-{m['fingerprint']}-float32-opset")


@pytest.mark.parametrize("spec", ["256-10", "256-13", "512-12", "1x2,2x3,4x6,6x10"], ids=str)
def test_onnxruntime_greedy_codes_equal_torch(pipe_test, engine_dir, spec):
    kw = dict(cfg=2.5, top_k=1, top_p=0.0, seed=0)
    ref = pipe_test.generate([1, 8], spec, fast=False, **kw)
    out = pipe_test.generate([1, 8], spec, backend="onnxruntime", engine_dir=engine_dir, **kw)
    for si, (a, b) in enumerate(zip(out.codes, ref.codes)):
        assert torch.equal(a, b), f"step {si + 1}"
    assert (out.images.int() - ref.images.int()).abs().max() <= 1


def test_foreign_stale_or_incomplete_directories(engine_dir, tmp_path):
    other = Pipeline.from_random("test", "test", seed=5)
    with pytest.raises(ArtifactError, match="built for other weights"):
        export_onnx(other.model, other.vae, engine_dir)
    with pytest.raises(ArtifactError, match="built for other weights"):
        other.generate([1], "1,2", backend="onnxruntime", engine_dir=engine_dir)
    # a copy rebuilt for the other weights is used, with the new fingerprint
    import shutil
    d = tmp_path / "copy"
    shutil.copytree(engine_dir, d)
    m = export_onnx(other.model, other.vae, d, rebuild=True, log=lambda *a: None)
    assert m["fingerprint"] != load_manifest(engine_dir)["fingerprint"]
    assert len(list(d.glob("*.onnx"))) == 3  # transformer step, decoder, encoder
    # tool versions are part of the contract
    stale = json.loads((d / "manifest.json").read_text())
    stale["tools"]["onnx"] = "0.0"
    (d / "manifest.json").write_text(json.dumps(stale))
    with pytest.raises(ArtifactError, match="built with"):
        export_onnx(other.model, other.vae, d)
    # a directory written by an older manifest format (e.g. bf16 tokenizer graphs) is refused
    stale["tools"] = m["tools"]
    stale["format"] = 1
    (d / "manifest.json").write_text(json.dumps(stale))
    with pytest.raises(ArtifactError, match="manifest format 1 is not 2.*rebuild"):
        export_onnx(other.model, other.vae, d)
    (d / "manifest.json").write_text(json.dumps(m))
    # a truncated file is refused by its recorded size, and --rebuild exports it again
    dec = d / m["graphs"]["decoder"]["file"]
    data = dec.read_bytes()
    assert m["graphs"]["decoder"]["bytes"] == len(data)
    dec.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match=r"bytes, exported as \d+ \(truncated or replaced\); --rebuild"):
        export_onnx(other.model, other.vae, d)
    export_onnx(other.model, other.vae, d, rebuild=True, log=lambda *a: None)
    assert dec.read_bytes() == data
    # a file of the right size that onnxruntime cannot parse: one line that names it, not the backend's exception
    dec.write_bytes(b"\xff" * len(data))
    with pytest.raises(ArtifactError, match=r"decoder-.*\.onnx: onnxruntime cannot load it \(.*--rebuild"):
        open_engine("onnxruntime", str(dec), torch.device("cpu"))
    dec.unlink()
    with pytest.raises(ArtifactError, match="incomplete"):
        load_manifest(d)
    with pytest.raises(ArtifactError, match="not an artifact directory"):
        load_manifest(tmp_path)


def test_cli_export_and_generate(capsys, ckpts, tmp_path):
    ck = ["--var-ckpt", str(ckpts["var_test"]), "--vae-ckpt", str(ckpts["vae_test"])]
    assert main(["export", *ck, "--backend", "onnx", "--out", str(tmp_path / "eng")]) == 0
    common = ["generate", *ck, "--labels", "2,3", "--schedule", "1,2,4", "--top-k", "1", "--top-p", "0", "--save-codes"]
    assert main([*common, "--backend", "onnxruntime", "--engine-dir", str(tmp_path / "eng"), "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / "codes.txt").read_text() == (tmp_path / "b" / "codes.txt").read_text()
    capsys.readouterr()
    rc = main([*common, "--backend", "onnxruntime", "--out", str(tmp_path / "c")])
    assert rc == 2 and "needs --engine-dir" in capsys.readouterr().err
    rc = main(["generate", "--labels", "1", "--backend", "onnxruntime", "--engine-dir", str(tmp_path / "eng"),
               "--out", str(tmp_path / "d")])  # the embedded default is other weights
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "built for other weights" in err[0]
    assert not (tmp_path / "d").exists()


def test_buckets_cover_every_step_size():
    assert bucket_for(1).name == "t64" and bucket_for(256).name == "t256" and bucket_for(257).name == "t1024"
    assert all(a.max_tokens + 1 == b.min_tokens for a, b in zip(BUCKETS, BUCKETS[1:]))
    for spec in ("256-13", "512-15", "1x2,16x32,32x64"):
        for h, w in Schedule.parse(spec):
            assert bucket_for(h * w)
    with pytest.raises(ValueError):
        bucket_for(5000)


def test_tensorrt_profiles_settings_and_names(engine_dir, pipe_test):
    m = load_manifest(engine_dir)
    profiles = step_profiles(m)
    # the manifest's config and the graph contract give the same profiles
    assert profiles == [TransformerStepGraph(pipe_test.model).profile(b) for b in BUCKETS]
    assert len(profiles) == len(BUCKETS)
    depth = m["model_config"]["depth"]
    for prof, b in zip(profiles, BUCKETS):
        assert set(prof) == {"x", "blocks", "head"} | {f"past_{n}_{i}" for n in "kv" for i in range(depth)}
        for lo, opt, hi in prof.values():
            assert all(a <= o <= c for a, o, c in zip(lo, opt, hi))
        assert prof["x"][0][1] == b.min_tokens and prof["x"][2][1] == b.max_tokens
        assert prof["past_k_0"][0][0] == 0  # the first step has no past
    assert DecoderGraph.profile()["codes"][2] == (64, 64, 64)
    assert builder_settings("float16")["flags"] == ["FP16"] and builder_settings("float32")["flags"] == []
    name = plan_name("transformer_step", m, "10.9.0", "sm90")
    assert m["fingerprint"] in name and "float32" in name and "t64-t256-t1024-t4096" in name and name.endswith("trt10.9.0-sm90.plan")
    # the plan is named by the buckets it is built for, which the directory's manifest then records
    mine = make_buckets((100, 4096))
    assert "-t100-t4096-trt10.9.0" in plan_name("transformer_step", m, "10.9.0", "sm90", mine)
    assert [p["x"][2][1] for p in step_profiles(m, mine)] == [100, 4096]
    assert built_buckets(m) is None
    record_buckets(engine_dir, mine)
    try:
        m2 = load_manifest(engine_dir)
        assert built_buckets(m2) == mine and {k: m2[k] for k in m} == m  # nothing else changed
    finally:
        (engine_dir / "manifest.json").write_text(json.dumps(m, indent=1))
    with pytest.raises(ArtifactError):
        builder_settings("int3")


@pytest.mark.parametrize("argv, msg", [
    (["--buckets", "64,256"], "--buckets applies to --backend tensorrt and aoti"),
    (["--backend", "aoti", "--buckets", "0,64"], "bucket edges must be token counts from 1 to 8192"),
    (["--backend", "aoti", "--buckets", "64,99999"], "bucket edges must be token counts from 1 to 8192"),
    (["--backend", "aoti", "--buckets", "64,x"], "cannot read bucket edges '64,x'"),
    (["--dtype", "bf16"], "onnxruntime's CPU provider cannot run bfloat16 graphs"),
])
def test_cli_export_bad_input(capsys, tmp_path, argv, msg):
    rc = main(["export", "--out", str(tmp_path / "e"), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and msg in err[0], err
    assert not (tmp_path / "e").exists()  # refused before anything was exported


def test_tensorrt_build_without_tensorrt(engine_dir):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed: the build is exercised on the GPU machine")
    except ImportError:
        with pytest.raises(ArtifactError, match="TensorRT is not installed"):
            build_engines(engine_dir, load_manifest(engine_dir))


def test_fingerprint_ignores_memory_format(pipe_test):
    from flexvar.export import weights_fingerprint
    import copy
    vae = copy.deepcopy(pipe_test.vae)
    before = weights_fingerprint(vae)
    vae.decoder.to(memory_format=torch.channels_last)
    assert weights_fingerprint(vae) == before


def test_image_to_image_on_onnxruntime(pipe_test, engine_dir):
    """The edits run on an exported backend too (encoder, step and decoder engines) with the same codes."""
    assert_edits_match_reference(pipe_test, "onnxruntime", engine_dir)


def test_bf16_export_keeps_tokenizer_graphs_float32(tmp_path, pipe_test):
    """ONNX Conv has no bfloat16 before opset 22: a bf16 export writes float32 tokenizer graphs, which
    pass the type-checking ONNX checker, run in onnxruntime and decode as the float32 tokenizer does."""
    import copy

    import onnxruntime as ort
    model = copy.deepcopy(pipe_test.model).to(torch.bfloat16)
    vae = copy.deepcopy(pipe_test.vae).to(torch.bfloat16)
    m = export_onnx(model, vae, tmp_path, log=lambda *a: None)
    assert m["precision"] == "bfloat16" and m["tokenizer_precision"] == "float32"
    for g in ("transformer_step", "decoder", "encoder"):
        onnx.checker.check_model(str(tmp_path / m["graphs"][g]["file"]), full_check=True)
    dec = onnx.load(str(tmp_path / m["graphs"]["decoder"]["file"]))
    assert {i.data_type for i in dec.graph.initializer if i.data_type in (1, 16)} == {onnx.TensorProto.FLOAT}
    codes = torch.randint(0, pipe_test.vae.cfg.codebook_size, (1, 3, 4))
    sess = ort.InferenceSession(str(tmp_path / m["graphs"]["decoder"]["file"]), providers=["CPUExecutionProvider"])
    img = torch.from_numpy(sess.run(None, {"codes": codes.numpy()})[0])
    ref = DecoderGraph(copy.deepcopy(vae).float()).module()(codes)
    assert (img.int() - ref.int()).abs().max() <= 1
