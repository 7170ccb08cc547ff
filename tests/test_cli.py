"""The command line: outputs, and every bad input answered by one line, a non-zero exit and no files."""
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

from flexvar import cli
from flexvar.cli import main


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_generate_with_checkpoints_writes_pngs_and_codes(capsys, ckpts, tmp_path, pipe_test):
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, "generate", "--var-ckpt", ckpts["var_test"], "--vae-ckpt", ckpts["vae_test"],
                          "--labels", "3,8", "--schedule", "1,2,4", "--top-k", "1", "--top-p", "0",
                          "--guidance", "constant", "--cfg", "9", "--cfg", "2", "--out", out, "--save-codes")
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["0000_class3.png", "0001_class8.png", "codes.txt"]
    lines = (out / "codes.txt").read_text().splitlines()
    assert len(lines) == 2 * 3 and lines[2].split()[:4] == ["0", "2", "4", "4"]
    # the later --cfg wins, and the files hold exactly what the API gives
    ref = pipe_test.generate([3, 8], "1,2,4", cfg=2.0, guidance="constant", top_k=1, top_p=0.0, seed=0)
    assert [int(c) for c in lines[5].split()[4:]] == ref.codes[2][1].flatten().tolist()
    png = torch.from_numpy(__import__("numpy").asarray(Image.open(out / "0001_class8.png")).copy())
    assert torch.equal(png, ref.images[1])


def test_generate_embedded_default_and_size_steps(capsys, tmp_path):
    rc, stdout, err = run(capsys, "generate", "--labels", "1", "--size", "64x128", "--steps", "3",
                          "--out", tmp_path / "o")
    assert rc == 0, err
    assert "RANDOM weights" in stdout
    assert Image.open(tmp_path / "o" / "0000_class1.png").size == (128, 64)


def test_info(capsys, ckpts):
    rc, stdout, _ = run(capsys, "info", ckpts["var_test"], ckpts["vae_test"])
    assert rc == 0 and "kind:       transformer" in stdout and "kind:       tokenizer" in stdout


BAD = [
    (["--var-ckpt", "{missing}", "--vae-ckpt", "{vae}"], "no such file"),
    (["--var-ckpt", "{text}", "--vae-ckpt", "{vae}"], "not a readable checkpoint"),
    (["--var-ckpt", "{trunc}", "--vae-ckpt", "{vae}"], "not a readable checkpoint"),
    (["--var-ckpt", "{vae}", "--vae-ckpt", "{vae}"], "is a tokenizer checkpoint, expected a transformer"),
    (["--var-ckpt", "{var}", "--vae-ckpt", "{var}"], "is a transformer checkpoint, expected a tokenizer"),
    (["--var-ckpt", "{var}", "--vae-ckpt", "{vae_tiny}"], "does not match the transformer"),
    (["--var-ckpt", "{var}"], "give both --var-ckpt and --vae-ckpt"),
    (["--labels", "1000"], "label 1000 is out of range 0-999"),
    (["--labels", "-1"], "label -1 is out of range"),
    (["--labels", "cat"], "label 'cat' is not an integer"),
    (["--schedule", "1,4,2"], "decreases at step 3"),
    (["--schedule", "0,1,2"], "at least 1"),
    (["--schedule", "256-99"], "unknown schedule preset"),
    (["--cfg", "-1"], "cfg must be a number from 0 to 100"),
    (["--cfg", "inf"], "cfg must be a number from 0 to 100"),
    (["--cfg", "1e300"], "cfg must be a number from 0 to 100"),
    (["--seed", "-1"], "seed must be an integer within 0 to 2**64 - 1"),
    (["--seed", str(2 ** 64)], "seed must be an integer within 0 to 2**64 - 1"),
    (["--schedule", "1,2,40000"], "needs at least"),
    (["--top-p", "1.5"], "top_p must be within"),
    (["--top-p", "-0.5"], "top_p must be within"),
    (["--guidance", "linear"], "guidance must be one of"),
    (["--size", "250", "--steps", "3"], "multiple of 16"),
    (["--cfg", "abc"], "invalid float value"),
    (["--device", "meta"], "device 'meta' is not supported: use cpu or cuda[:N]"),
    (["--schedule", "256-6", "--size", "256", "--steps", "6"], "give --schedule or --size with --steps, not both"),
    (["--backend", "trt"], "unknown backend 'trt'; use one of torch, onnxruntime, tensorrt, aoti"),
    (["--backend", "aoti"], "--backend aoti needs --engine-dir"),
]


@pytest.mark.parametrize("extra, msg", BAD, ids=[m for _, m in BAD])
def test_bad_input(capsys, ckpts, tmp_path, extra, msg):
    (tmp_path / "notes.txt").write_text("hello\n")
    data = ckpts["var_test"].read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 3])
    subst = {"missing": tmp_path / "nope.pth", "text": tmp_path / "notes.txt", "trunc": tmp_path / "trunc.pth",
             "var": ckpts["var_test"], "vae": ckpts["vae_test"], "vae_tiny": ckpts["vae_tiny"]}
    args = ["generate", "--labels", "1"] + [a.format(**subst) for a in extra] + ["--out", tmp_path / "out"]
    if "--var-ckpt" not in extra and "--labels" in extra:  # labels are checked against a loaded model
        args = ["generate", "--var-ckpt", ckpts["var_tiny"], "--vae-ckpt", ckpts["vae_tiny"]] + args[1:]
    before = set(tmp_path.iterdir())
    rc, stdout, err = run(capsys, *args)
    assert rc != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flexvar: error: ") and msg in lines[0], err
    assert set(tmp_path.iterdir()) == before  # no output folder, no temporary files


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs Linux's /proc (a folder where nothing can be made)")
@pytest.mark.parametrize("command", ["generate", "export"])
def test_unwritable_output_is_refused_before_any_work(capsys, command):
    argv = [command, "--out", "/proc/flexvar-out"] + (["--labels", "1"] if command == "generate" else [])
    rc, stdout, err = run(capsys, *argv)
    assert rc == 2 and err.strip() == "flexvar: error: /proc/flexvar-out: cannot write the output there " \
                                      "(No such file or directory)" and "load:" not in stdout, err


def test_out_of_memory_is_one_line(capsys, monkeypatch, tmp_path):
    """An allocator's refusal is the run's size on this machine, said as such; other failures stay internal
    errors."""
    def oom(args):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 6553600020480 bytes.\nmore")

    monkeypatch.setitem(cli.COMMANDS, "generate", oom)
    rc, _, err = run(capsys, "generate", "--labels", "1", "--out", tmp_path / "o")
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith("flexvar: error: out of memory: [enforce fail") and "fewer images" in err
    monkeypatch.setitem(cli.COMMANDS, "generate", lambda args: 1 / 0)
    rc, _, err = run(capsys, "generate", "--labels", "1", "--out", tmp_path / "o")
    assert rc == 1 and err.startswith("flexvar: internal error: ZeroDivisionError")


BENCH_BAD = [
    (["--batches", "0"], "--batches: image counts must be >= 1"),
    (["--batches", "a"], "--batches: cannot read 'a'"),
    (["--impls", "nope"], "--impls: unknown implementation 'nope'"),
    (["--impls", "eager,fast-nosmal"], "(variant 'nosmal')"),
    (["--impls", "fast-"], "--impls: unknown implementation 'fast-'"),
    (["--repeat", "0"], "--repeat: must be >= 1"),
    (["--dtype", "int8"], "argument --dtype: invalid choice"),
    (["--device", "foo"], "--device: unknown device 'foo'"),
    (["--depths", "99"], "unknown transformer preset 'd99'"),
    (["--schedules", "256-99"], "unknown schedule preset"),
    (["--out", "{tmp}/file.txt/x.json"], "cannot write there"),
    (["--bogus"], "unrecognized arguments: --bogus"),
]


@pytest.mark.parametrize("extra, msg", BENCH_BAD, ids=[m for _, m in BENCH_BAD])
def test_bench_bad_arguments(capsys, tmp_path, monkeypatch, extra, msg):
    """`flexvar bench`: every argument is checked before anything runs; nothing is written."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("a file, not a folder")
    before = set(tmp_path.iterdir())
    rc, stdout, err = run(capsys, "bench", *[a.format(tmp=tmp_path) for a in extra])
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("flexvar: error: ") and msg in lines[0], err
    assert stdout == "" and set(tmp_path.iterdir()) == before


def test_bench_impl_names():
    from flexvar.bench.steps_latency import check_impl
    for ok in ("eager", "compile", "fast", "onnxruntime", "fast-nographs-rows8-skinny0", "fast-uptr-lastkv"):
        check_impl(ok)


def test_console_script_no_traceback(tmp_path):
    """The installed entry point: one stderr line and exit 2 for a bad file, as a user sees it."""
    (tmp_path / "x.pth").write_text("not a checkpoint")
    r = subprocess.run([sys.executable, "-m", "flexvar", "info", str(tmp_path / "x.pth")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
