"""The C++ host's latency next to the Python runtimes, in one run on one device.

    python -m flexvar.bench.host_latency --host build/flexvar_host [--depth d16] [--dtype fp16]
        [--batches 1,32] [--schedule 256-10] [--repeat 10] [--check-fp32] --out bench/results/X.json

AOTInductor packages are exported here (one bucket of 1-4096 tokens and the decoder) from
the seeded random weights the other benchmarks use; the host (`flexvar_host --repeat`) generates from
them, and the Python fast runtime and the Python engine runtime over the same packages ('aoti') are
timed beside it. Every time is one whole generation, tokenizer decode included (the host's also
includes copying images and codes to host memory). Greedy codes of the host and of the fast runtime
(same weights, same dtype) are compared step by step.

--check-fp32 first checks the CUDA host in float32 on the tiny preset: its greedy codes must equal the
Python reference runtime's and its images lie within 1/255 (exit 1 otherwise).
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from flexvar.bench.steps_latency import Impls, time_call
from flexvar.export.graphs import make_buckets

from flexvar.engine_runtime import EngineSet
from flexvar.sampling import SamplingParams
from flexvar.schedule import Schedule

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def run_host(host: str, artifacts, labels, schedule: str, p: SamplingParams, seed: int, out: Path,
             repeat: int = 0) -> tuple[list[list[int]], float | None, dict]:
    """(codes lines, median ms or None, latency fields) of one host invocation (images into out/img, made by the
    host; out itself made here, as the host wants its output's parent to exist)."""
    out.mkdir(parents=True, exist_ok=True)
    codes = out / "codes.txt"
    cmd = [host, "--artifacts", str(artifacts), "--labels", ",".join(map(str, labels)), "--schedule", schedule,
           "--cfg", str(p.cfg), "--guidance", p.guidance, "--top-k", str(p.top_k), "--top-p", str(p.top_p),
           "--seed", str(seed), "--out", str(out / "img"), "--save-codes", str(codes), "--repeat", str(repeat)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"host_latency: flexvar_host failed: {r.stderr.strip()[-500:]}")
    fields = {}
    m = re.search(r"latency_ms median ([\d.]+) min ([\d.]+) max ([\d.]+)", r.stdout)
    if m:
        fields = {"median_ms": float(m[1]), "min_ms": float(m[2]), "max_ms": float(m[3])}
    lines = [list(map(int, ln.split())) for ln in codes.read_text().splitlines()]
    return lines, fields.get("median_ms"), fields


def agreement(lines: list[list[int]], codes: list[torch.Tensor]) -> list[float]:
    """Per step, the fraction of the host's codes equal to the Python runtime's."""
    eq = [0] * len(codes)
    n = [0] * len(codes)
    for b, s, h, w, *c in lines:
        ref = codes[s][b].flatten().cpu().tolist()
        eq[s] += sum(int(x == y) for x, y in zip(c, ref))
        n[s] += len(ref)
    return [round(e / max(k, 1), 5) for e, k in zip(eq, n)]


def check_fp32(host: str, work: Path) -> dict:
    """Tiny preset, float32, CUDA: the host's greedy codes = the reference runtime's, images within 1/255; and
    under sampling, a seed's draws repeat while seeds differing above bit 32 differ ("seeds")."""
    from PIL import Image

    from flexvar import Pipeline
    pipe = Pipeline.from_random(device="cuda", dtype=torch.float32)
    d = work / "tiny-fp32"
    export_in_child("tiny", "fp32", d)
    out = {}
    for spec, guidance in (("256-10", "ramp"), ("1,2,3,4,6,8", "constant"), ("1x2,2x3,4x6", "ramp")):
        p = SamplingParams(cfg=2.5, guidance=guidance, top_k=1, top_p=0.0)
        o = work / f"check-{len(out)}"
        lines, _, _ = run_host(host, d, [5, 7], spec, p, 0, o)
        ref = pipe.generate([5, 7], spec, cfg=2.5, guidance=guidance, top_k=1, top_p=0.0, seed=0, fast=False)
        codes_equal = all(a == 1.0 for a in agreement(lines, ref.codes))
        px = max(int(np.abs(np.asarray(Image.open(f)).astype(int) - ref.images[b].numpy().astype(int)).max())
                 for b, f in enumerate(sorted((o / "img").glob("*.ppm"))))
        out[spec] = {"codes_equal": codes_equal, "max_pixel_diff": px}
    # sampled codes: a seed repeats its draws, and one that differs only above bit 32 draws others (the host folds
    # the seed into the sampling hash's 32-bit word as flexvar.fast.seed_word does)
    p = SamplingParams(cfg=2.5, guidance="ramp", top_k=900, top_p=0.95)
    runs = [run_host(host, d, [5, 7], "1,2,4,6", p, seed, work / f"seed-{i}")[0]
            for i, seed in enumerate((5, 5, 5 + 2 ** 32))]
    out["seeds"] = {"repeat_equal": runs[0] == runs[1], "high_word_differs": runs[0] != runs[2]}
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else round(10 * np.log10(255 ** 2 / mse), 2)


def vs_fp32(args, impls, artifacts, sched, work: Path, B: int = 8) -> dict:
    """Free-running greedy generations of the low-precision paths (C++ host, Python fast runtime,
    Python over the AOTInductor packages) against the float32 runtime of the same weights: code
    agreement per step (step 1 sees identical inputs; later steps inherit earlier differences) and
    PSNR of the images."""
    from PIL import Image

    from flexvar import engine_runtime
    from flexvar.config import FlexVARConfig, VQVAEConfig
    from flexvar.fast import FastRuntime
    from flexvar.random_weights import random_tokenizer, random_transformer
    dev = impls.device
    labels = [(13 * i + 3) % 1000 for i in range(B)]
    greedy = SamplingParams(top_k=1, top_p=0.0)
    rt32 = FastRuntime(random_transformer(FlexVARConfig.from_name(args.depth), seed=0, device=dev),
                       random_tokenizer(VQVAEConfig.from_name("vq16"), seed=1, device=dev),
                       use_graphs=False, compile_blocks=False, compile_decoder=False)
    codes32, img32 = rt32.generate(labels, sched, greedy, 0)
    codes32 = [c.clone() for c in codes32]
    img32 = img32.cpu().numpy()
    out = {}
    codes, img = impls.runtime("fast").generate(labels, sched, greedy, 0)
    out["python_fast"] = (agreement_codes(codes, codes32), psnr(img.cpu().numpy(), img32))
    if args.host != "-":
        o = work / "vs-fp32"
        lines, _, _ = run_host(args.host, artifacts, labels, args.schedule, greedy, 0, o)
        imgs = np.stack([np.asarray(Image.open(f)) for f in sorted((o / "img").glob("*.ppm"))])
        out["cpp_host"] = (agreement(lines, codes32), psnr(imgs, img32))
    if "aoti" in impls.engines:
        eng = impls.engines["aoti"]
        codes = engine_runtime.generate_codes(impls.model, impls.vae.quantize, eng, torch.tensor(labels, device=dev),
                                              sched, greedy, torch.Generator(dev).manual_seed(0))
        img = engine_runtime.decode(eng, codes[-1])
        out["python_aoti"] = (agreement_codes(codes, codes32), psnr(img.cpu().numpy(), img32))
    return {k: {"agreement_per_step": a, "psnr_db": p} for k, (a, p) in out.items()}


def export_in_child(depth: str, dtype: str, out: Path) -> None:
    """Export in a separate process: an AOTInductor CUDA package loaded by the process that compiled
    it crashed (segfault in aoti_load_package, torch 2.11, seen twice); the host never loads them here."""
    cmd = [sys.executable, "-m", "flexvar.bench.host_latency", "--host", "-", "--export-only", str(out),
           "--depth", depth, "--dtype", dtype, "--out", "-"]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"host_latency: export failed ({r.returncode}): {r.stderr.strip()[-800:]}")


def export_only(depth: str, dtype: torch.dtype, out: Path) -> None:
    from flexvar.export import export_onnx
    from flexvar.export.aoti import export_aoti

    from flexvar import Pipeline
    from flexvar.config import FlexVARConfig, VQVAEConfig
    from flexvar.random_weights import random_tokenizer, random_transformer
    dev = torch.device("cuda")
    if depth == "tiny":
        pipe = Pipeline.from_random(device=dev, dtype=dtype)
        model, vae, edges = pipe.model, pipe.vae, (64, 4096)
    else:  # the weights of steps_latency.Impls
        model = random_transformer(FlexVARConfig.from_name(depth), seed=0, device=dev).to(dtype)
        vae = random_tokenizer(VQVAEConfig.from_name("vq16"), seed=1, device=dev).to(dtype)
        edges = (4096,)
    m = export_onnx(model, vae, out, log=lambda *a: None)
    export_aoti(model, vae, out, m, buckets=make_buckets(edges), log=lambda *a: None, encoder=False)


def _write(res: dict, path: str) -> None:
    if path != "-":
        Path(path).write_text(json.dumps(res, indent=1))


def agreement_codes(codes: list[torch.Tensor], ref: list[torch.Tensor]) -> list[float]:
    return [round((a.cpu() == b.cpu()).float().mean().item(), 5) for a, b in zip(codes, ref)]


def _timed(impls, impl, labels, sched, p, dev, repeat) -> dict:
    warm, t = time_call(impls.call(impl, labels, sched, p, 0, True), dev, repeat)
    m = statistics.median(t)
    return {"impl": f"python_{impl}", "batch": len(labels), "median_ms": round(m, 3), "min_ms": round(min(t), 3),
            "max_ms": round(max(t), 3), "images_per_s": round(1e3 * len(labels) / m, 1), "warmup_s": round(warm, 3),
            "repeats": repeat}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", required=True, help="the flexvar_host binary (a CUDA build); '-': Python only")
    ap.add_argument("--depth", default="d16")
    ap.add_argument("--dtype", default="fp16", choices=list(DTYPES))
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--schedule", default="256-10")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--check-fp32", action="store_true")
    ap.add_argument("--export-only", help=argparse.SUPPRESS)  # the child process of export_in_child
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.export_only:
        export_only(args.depth, DTYPES[args.dtype], Path(args.export_only))
        return 0
    dev = torch.device("cuda")
    t_start = time.time()
    res = {"device": torch.cuda.get_device_name(dev), "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": "python -m flexvar.bench.host_latency " + " ".join(sys.argv[1:]), "dtype": args.dtype,
           "decode_included": True, "model": args.depth, "schedule": args.schedule, "results": []}
    work = Path(tempfile.mkdtemp(prefix="flexvar-host-"))
    if args.check_fp32:
        res["fp32_check"] = check_fp32(args.host, work)
        print("fp32 check:", res["fp32_check"])
        if not all(v["codes_equal"] and v["max_pixel_diff"] <= 1 for v in res["fp32_check"].values()):
            _write(res, args.out)
            return 1
    impls = Impls(args.depth, "vq16", dev, DTYPES[args.dtype], DTYPES[args.dtype])
    d = work / "artifacts"
    t0 = time.perf_counter()
    export_in_child(args.depth, args.dtype, d)
    res["export_s"] = round(time.perf_counter() - t0, 1)
    sched = Schedule.parse(args.schedule)
    p = SamplingParams()
    greedy = SamplingParams(top_k=1, top_p=0.0)
    batches = [int(b) for b in args.batches.split(",")]
    for B in batches if args.host != "-" else []:  # host rows (and the fast runtime beside each)
        labels = [(7 * i + 1) % 1000 for i in range(B)]
        _, med, fields = run_host(args.host, d, labels, args.schedule, p, 0, work / f"host-B{B}", args.repeat)
        res["results"].append({"impl": "cpp_host", "batch": B, **fields, "images_per_s": round(1e3 * B / med, 1),
                               "repeats": args.repeat})
        res["results"].append(_timed(impls, "fast", labels, sched, p, dev, args.repeat))
        lines, _, _ = run_host(args.host, d, labels, args.schedule, greedy, 0, work / f"greedy-B{B}")
        codes, _ = impls.runtime("fast").generate(labels, sched, greedy, 0)
        res.setdefault("greedy_agreement_host_vs_fast", {})[str(B)] = agreement(lines, codes)
        _write(res, args.out)
    # Python over the same packages, last: loaded in this process (compiled in the child)
    impls.engines["aoti"] = EngineSet(impls.model, impls.vae, "aoti", d, dev, log=lambda *a: None,
                                      buckets=make_buckets((4096,)), encoder=False)
    for B in batches:
        labels = [(7 * i + 1) % 1000 for i in range(B)]
        if args.host == "-":  # no host: the fast runtime beside the packages here
            res["results"].append(_timed(impls, "fast", labels, sched, p, dev, args.repeat))
        res["results"].append(_timed(impls, "aoti", labels, sched, p, dev, args.repeat))
    res["greedy_vs_fp32"] = vs_fp32(args, impls, d, sched, work)
    res["wall_s"] = round(time.time() - t_start, 1)
    _write(res, args.out)
    print("| impl | batch | ms (min-max) | img/s |\n|---|---|---|---|")
    for r in res["results"]:
        print(f"| {r['impl']} | {r['batch']} | {r['median_ms']:.2f} ({r['min_ms']:.2f}-{r['max_ms']:.2f}) | "
              f"{r['images_per_s']} |")
    print("greedy agreement host vs fast, per step:", res.get("greedy_agreement_host_vs_fast"))
    for k, v in res["greedy_vs_fp32"].items():
        print(f"{args.dtype} {k} vs float32: step-1 agreement {v['agreement_per_step'][0]:.4f}, "
              f"all steps {v['agreement_per_step']}, PSNR {v['psnr_db']} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
