"""The C++ host (host/): built with CMake against the installed torch, it generates from AOTInductor
artifacts with the Python runtime's greedy codes and images within 1/255; bad input exits 2."""
import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import cmake_build


@pytest.fixture(scope="module")
def host_bin(tmp_path_factory):
    if shutil.which("cmake") is None:
        pytest.skip("needs cmake")
    build = cmake_build(tmp_path_factory.mktemp("host-build"), "flexvar_host",
                        f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}")
    return build / "flexvar_host"


def run_host(host_bin, *args):
    return subprocess.run([str(host_bin), *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize("schedule, guidance", [("1,2,3,4,6,8", "constant"), ("256-10", "ramp"), ("1x2,2x3,4x6", "ramp")])
def test_host_matches_python(host_bin, aoti_artifacts, pipe_test, tmp_path, schedule, guidance):
    d, _ = aoti_artifacts
    r = run_host(host_bin, "--artifacts", d, "--labels", "5,7", "--schedule", schedule, "--cfg", "2.5",
                 "--guidance", guidance, "--top-k", "1", "--top-p", "0", "--seed", "0", "--out", tmp_path / "o",
                 "--save-codes", tmp_path / "codes.txt")
    assert r.returncode == 0, r.stderr
    ref = pipe_test.generate([5, 7], schedule, cfg=2.5, guidance=guidance, top_k=1, top_p=0.0, seed=0, fast=False)
    lines = (tmp_path / "codes.txt").read_text().splitlines()
    assert len(lines) == 2 * len(ref.codes)
    for line in lines:
        b, s, h, w, *codes = map(int, line.split())
        assert (h, w) == tuple(ref.codes[s].shape[1:])
        assert codes == ref.codes[s][b].flatten().tolist(), f"image {b} step {s}"
    for b, lab in enumerate((5, 7)):
        img = np.asarray(Image.open(tmp_path / "o" / f"{b:04d}_class{lab}.ppm")).astype(int)
        assert np.abs(img - ref.images[b].numpy().astype(int)).max() <= 1


def test_host_bad_input(host_bin, aoti_artifacts, tmp_path):
    d, _ = aoti_artifacts
    bad = tmp_path / "mismatched"
    shutil.copytree(d, bad)
    m = json.loads((bad / "manifest.json").read_text())
    m["fingerprint"] = "0" * 16
    (bad / "manifest.json").write_text(json.dumps(m, indent=1))
    partial = tmp_path / "partial"
    shutil.copytree(d, partial)
    next(partial.glob("transformer_step-*.pt2")).unlink()
    corrupt = tmp_path / "corrupt"
    shutil.copytree(d, corrupt)
    next(corrupt.glob("decoder-*.pt2")).write_bytes(b"PK\x03\x04 not a package")
    cuda = tmp_path / "cuda"
    shutil.copytree(d, cuda)
    (cuda / "host.txt").write_text((cuda / "host.txt").read_text().replace("device cpu", "device cuda"))
    common = ["--labels", "1", "--out", tmp_path / "out"]
    cases = [
        (["--artifacts", tmp_path / "missing", *common], "no such artifact directory"),
        (["--artifacts", tmp_path, *common], "no host.txt"),
        (["--artifacts", bad, *common], "different weights"),
        (["--artifacts", partial, *common], "missing package"),
        (["--artifacts", corrupt, *common], ".pt2: AOTInductor cannot load it ("),
        (["--artifacts", d, "--schedule", "256-99", *common], "unknown schedule preset"),
        (["--artifacts", d, "--schedule", "1,4,2", *common], "decreases at step 3"),
        (["--artifacts", d, "--labels", "10", "--out", tmp_path / "out"], "label 10 is out of range 0-9"),
        (["--artifacts", d, "--labels", "x", "--out", tmp_path / "out"], "--labels: invalid number 'x'"),
        (["--artifacts", d, "--top-k", "1.5", *common], "--top-k: not an integer '1.5'"),
        (["--artifacts", d, "--top-p", "2", *common], "top_p"),
        (["--artifacts", d, "--repeat", "-1", *common], "--repeat: must be >= 0"),
        (["--artifacts", d, "--seed", "-1", *common], "--seed: must be >= 0"),
        (["--artifacts", d, "--max-pn", "0", *common], "max_pn must be >= 1"),
        (["--artifacts", d, "--labels", "1", "--out", "/proc/flexvar-out"], "/proc/flexvar-out: cannot write there"),
        (["--artifacts", d, *common, "--save-codes", tmp_path / "nowhere" / "c.txt"], "no such folder"),
        (["--artifacts", d, "--cfg", "inf", *common], "cfg must be a number from 0 to 100"),
        (["--artifacts", d, "--cfg", "101", *common], "cfg must be a number from 0 to 100"),
    ]
    if torch.version.cuda is None:  # the CPU build (CI) refuses CUDA artifacts
        cases.append((["--artifacts", cuda, *common], "built without CUDA"))
    for args, msg in cases:
        r = run_host(host_bin, *args)
        err = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(err) == 1 and msg in err[0], (args, r.stderr)
    assert not (tmp_path / "out").exists()


def test_host_repeat_reports_latency(host_bin, aoti_artifacts, tmp_path):
    r = run_host(host_bin, "--artifacts", aoti_artifacts[0], "--labels", "3,4", "--schedule", "1,2,4", "--repeat", "3",
                 "--out", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if "latency_ms" in ln).split()
    med, lo, hi = (float(line[line.index(k) + 1]) for k in ("median", "min", "max"))
    assert 0 < lo <= med <= hi and line[line.index("repeats") + 1] == "3" and line[line.index("batch") + 1] == "2"


def test_host_sampling_is_seeded(host_bin, aoti_artifacts, tmp_path):
    """Sampled codes (top-k 900): a seed repeats them, through bench/host_latency.run_host, which makes the output's
    parent (the host wants it to exist). The CPU build draws with torch's CPU generator, as the Python reference
    runtime (and the release) do, and that generator reads only a seed's low 32 bits: seeds differing above bit 32
    give the same codes here, as in Python on the CPU (the CUDA build folds the high word in:
    tests/test_gpu_host.py)."""
    from flexvar.bench.host_latency import run_host as bench_run_host
    from flexvar.sampling import SamplingParams
    d, _ = aoti_artifacts
    p = SamplingParams(top_k=900, top_p=0.95)
    runs = [bench_run_host(str(host_bin), d, [2, 4], "1,2,4,6", p, seed, tmp_path / "deep" / f"run{i}")[0]
            for i, seed in enumerate((5, 5, 5 + 2 ** 32))]
    assert runs[0] == runs[1]
    assert runs[0] == runs[2]  # the CPU generator's 32-bit seed, as torch.Generator("cpu").manual_seed has it
