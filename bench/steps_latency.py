"""Steps against latency: the release's eager algorithm, the same under torch.compile, and the fast
runtime, side by side in one run on one device, with random weights.

    python -m flexvar.bench.steps_latency            # or: flexvar bench
    flexvar bench --depths 16,24 --batches 1,32 --schedules 256-10 --impls eager,fast

Every row times a whole generation, tokenizer decode included unless --no-decode (uint8 images
left on the device), after a warm-up run that is timed separately (it holds compilation and
graph capture). It reports median/min/max, images/s, achieved GB/s (weights streamed, for batch 1)
and TFLOP/s (counted with FlopCounterMode) against ceilings measured in the same run, plus a
per-stage breakdown of the fast runtime. Writes JSON and a PNG plot, prints a table.
Without a GPU it runs a small CPU configuration (tiny models) in well under two minutes.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from flexvar.cli import OneLineParser
from flexvar.config import FlexVARConfig, VQVAEConfig
from flexvar.errors import InputError
from flexvar.files import writable_folder, write_text
from flexvar.fast import FastRuntime
from flexvar.images import pixels_uint8
from flexvar.random_weights import random_tokenizer, random_transformer
from flexvar.release_eager import ReleaseSampler
from flexvar.sampling import SamplingParams
from flexvar.schedule import Schedule

WIDE = "1x2,2x4,3x6,4x8,5x10,6x12,8x16,10x20,13x26,16x32"  # 256x512, 1:2, 10 steps
GPU_SCHEDULES = ["256-6", "256-7", "256-8", "256-9", "256-10", "256-11", "256-12", "256-13", "384-11", "512-12",
                 WIDE]


def engine_subdir(root: str, depth: str, dtype: torch.dtype) -> str:
    """The folder of one model's engines in one precision under an --engine-dir (shared by
    `flexvar bench` and `bench/precision.py`, so one export serves both)."""
    return os.path.join(root, f"{depth}-{str(dtype).removeprefix('torch.')}")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device, repeat: int) -> tuple[float, list[float]]:
    """(warm-up seconds, list of ms per timed call)."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    warm = time.perf_counter() - t0
    out = []
    for _ in range(repeat):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append((time.perf_counter() - t0) * 1e3)
    return warm, out


def measure_ceilings(device) -> dict:
    """Device-to-device copy GB/s (read + write) and bf16 matmul TFLOP/s, medians of 10."""
    if device.type != "cuda":
        return {}
    x = torch.randn(256 * 1024 * 1024, device=device, dtype=torch.bfloat16)  # 512 MiB
    y = torch.empty_like(x)
    _, t = time_call(lambda: y.copy_(x), device, 10)
    copy = 2 * x.numel() * 2 / (statistics.median(t) / 1e3) / 1e9
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    _, t = time_call(lambda: a @ b, device, 10)
    mm = 2 * 8192 ** 3 / (statistics.median(t) / 1e3) / 1e12
    return {"copy_GBps": round(copy, 1), "bf16_matmul_TFLOPs": round(mm, 1)}


_UPSAMPLE = {"upnear": "nearest", "uptr": "transpose"}  # variant token -> FastRuntime upsample
# the tokens of a fast-VARIANT impl (rowsN and skinnyN besides), as `Impls.runtime` and `Impls.call` read them
VARIANT_TOKENS = frozenset({"nographs", "nokernels", "nocompile", "nchw", "nocdec", "nosmall", "sdpa", "triton",
                            "ingn", "nofirst", "nolt", "nofuse", "notaps", "sblock", "gnil", "gnl2", "kvhm", "lastkv",
                            "tdec", "tblk", *_UPSAMPLE})
ENGINE_IMPLS = ("onnxruntime", "aoti", "tensorrt")


def _rows(variant: str) -> dict:
    """small_step_rows and skinny_rows of a fast-...-rowsN-skinnyM variant (only those it names)."""
    out = {}
    for part in variant.split("-"):
        for prefix, key in (("rows", "small_step_rows"), ("skinny", "skinny_rows")):
            if part.startswith(prefix) and part[len(prefix):].isdigit():
                out[key] = int(part[len(prefix):])
    return out


class Impls:
    """The implementations under test, sharing one set of random weights."""

    def __init__(self, depth_name: str, tok_name: str, device, dtype, autocast_dtype, engine_dir=None):
        """engine_dir: where exported engines live, one folder per model and precision, kept (and reused by
        later runs with the same weights); default: temporary folders."""
        self.device, self.dtype, self.autocast_dtype = device, dtype, autocast_dtype
        self.engine_dir, self.depth_name = engine_dir, depth_name
        cfg = FlexVARConfig.from_name(depth_name)
        model = random_transformer(cfg, seed=0, device=device)
        vae = random_tokenizer(VQVAEConfig.from_name(tok_name), seed=1, device=device)
        # the eager baselines keep float32 weights (autocast on GPU), as the release's scripts do
        self.release = ReleaseSampler({k: v.clone() for k, v in model.state_dict().items()},
                                      {k: v.clone() for k, v in vae.state_dict().items()})
        self.compiled = None
        self.model, self.vae = model.to(dtype), vae.to(dtype)
        self.fast = {}
        self.engines, self._engine_dirs = {}, []
        self.stream_bytes = sum(p.numel() * p.element_size() for n, p in self.model.named_parameters()
                                if n.startswith("blocks.") and ".ada_lin." not in n or n.startswith("head."))
        self.decoder_bytes = sum(p.numel() * p.element_size() for n, p in self.vae.named_parameters()
                                 if n.startswith(("decoder.", "post_quant_conv.")))
        self.params = sum(p.numel() for p in self.model.parameters())

    def runtime(self, variant: str) -> FastRuntime:
        if variant not in self.fast:
            cuda = self.device.type == "cuda"
            self.fast[variant] = FastRuntime(self.model, self.vae, use_graphs=cuda and "nographs" not in variant,
                                             use_kernels="nokernels" not in variant,
                                             compile_blocks=cuda and "nocompile" not in variant,
                                             channels_last=cuda and "nchw" not in variant,
                                             compile_decoder=cuda and "nocdec" not in variant,
                                             fused_small_steps=cuda and "nosmall" not in variant and "nokernels" not in variant,
                                             tune=tuple(t for t, v in (("decoder", "tdec"), ("blocks", "tblk"))
                                                        if v in variant.split("-")),
                                             attention=next((a for a in ("sdpa", "triton") if a in variant.split("-")),
                                                            None),
                                             group_norm_op=cuda and "ingn" not in variant.split("-")
                                             and "nokernels" not in variant,
                                             first_step_table=cuda and "nofirst" not in variant.split("-"),
                                             lt_gemms=False if "nolt" in variant.split("-") else None,
                                             group_norm_fuse="nofuse" not in variant.split("-"),
                                             conv_out_taps="notaps" not in variant.split("-"),
                                             upsample=next((m for t, m in _UPSAMPLE.items() if t in variant.split("-")),
                                                           None),
                                             kv_head_major_min_batch=8 if "kvhm" in variant.split("-") else None,
                                             last_step_kv="lastkv" in variant.split("-"),
                                             **_rows(variant))
        return self.fast[variant]

    def _eager(self, sampler, labels, sched, p, seed, decode):
        lab = torch.tensor(labels, device=self.device)
        ctx = torch.autocast("cuda", dtype=self.autocast_dtype) if self.device.type == "cuda" else _null()
        with ctx, torch.no_grad():
            codes = sampler.generate_codes(lab, sched.steps, cfg=p.cfg, guidance=p.guidance, top_k=p.top_k,
                                           top_p=p.top_p, seed=seed)
            if decode:
                img = sampler.decode(codes[-1])
                return pixels_uint8(img)
        return codes

    def call(self, impl: str, labels, sched, p, seed, decode):
        if impl == "eager":
            return lambda: self._eager(self.release, labels, sched, p, seed, decode)
        if impl == "compile":
            if self.compiled is None:
                self.compiled = ReleaseSampler(self.release.w, self.release.v)
                self.compiled._block = torch.compile(self.compiled._block, dynamic=True)
                self.compiled._head = torch.compile(self.compiled._head, dynamic=True)
            return lambda: self._eager(self.compiled, labels, sched, p, seed, decode)
        if impl in ENGINE_IMPLS:
            return self._engine_call(impl, labels, sched, p, seed, decode)
        rt = self.runtime(impl)
        run = lambda: rt.generate(labels, sched, p, seed, decode)  # noqa: E731
        if "sblock" in impl.split("-"):  # sampling through the one-block-per-row kernels (as captured in its graphs)
            return lambda: _with_env("FLEXVAR_SAMPLE_KERNEL", "block", run)
        order = {"gnil": False, "gnl2": True}.keys() & impl.split("-")
        if order:  # the GroupNorm kernels' programs chunk by chunk across the images / image by image
            from flexvar.kernels import group_norm
            return lambda: _with_attr(group_norm, "L2_ORDER", order == {"gnl2"}, run)
        return run

    def _engine_call(self, impl, labels, sched, p, seed, decode):
        """An exported backend: artifacts built on the first call (in the warm-up), then reused."""
        from flexvar import engine_runtime
        from flexvar.export.graphs import make_buckets
        if impl not in self.engines:
            self.engines[impl] = None
            if self.engine_dir:
                d = engine_subdir(self.engine_dir, self.depth_name, self.dtype)
            else:
                self._engine_dirs.append(tempfile.TemporaryDirectory(prefix=f"flexvar-{impl}-"))
                d = self._engine_dirs[-1].name
        lab = torch.tensor(labels, device=self.device)

        def go():
            if self.engines[impl] is None:
                self.engines[impl] = engine_runtime.EngineSet(self.model, self.vae, impl, d, self.device,
                                                              log=lambda *a: None, buckets=make_buckets((4096,)),
                                                              encoder=False)
            eng = self.engines[impl]
            codes = engine_runtime.generate_codes(self.model, self.vae.quantize, eng, lab, sched, p,
                                                  torch.Generator(self.device).manual_seed(seed))
            return engine_runtime.decode(eng, codes[-1]) if decode else codes
        return go

    def flops(self, labels, sched, p, decode) -> float:
        from torch.utils.flop_counter import FlopCounterMode
        # uncompiled: nothing gets compiled under the counting mode
        rt = FastRuntime(self.model, self.vae, use_graphs=False, use_kernels=False, compile_blocks=False,
                         compile_decoder=False)
        with FlopCounterMode(display=False) as fc:
            rt.generate(labels, sched, p, 0, decode)
        return float(fc.get_total_flops())


def _with_env(name: str, value: str, fn):
    """fn() with the environment variable name set to value, restored after."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        return fn()
    finally:
        if before is None:
            os.environ.pop(name)
        else:
            os.environ[name] = before


def _with_attr(obj, name: str, value, fn):
    """fn() with obj.name set to value, restored after."""
    before = getattr(obj, name)
    setattr(obj, name, value)
    try:
        return fn()
    finally:
        setattr(obj, name, before)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def run(args) -> dict:
    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    p = SamplingParams(cfg=2.5, guidance="ramp", top_k=900, top_p=0.95)
    out = {"device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
           "torch": torch.__version__, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "command": " ".join(shlex.quote(a) for a in sys.argv), "dtype": args.dtype,
           "autocast_eager": args.autocast if cuda else "float32", "decode_included": not args.no_decode,
           "sampling": {"cfg": 2.5, "guidance": "ramp", "top_k": 900, "top_p": 0.95},
           "ceilings": measure_ceilings(device), "results": [], "breakdown": []}
    if cuda:
        torch.cuda.empty_cache()  # the ceiling buffers
    print(f"bench: {out['device']}, torch {torch.__version__}, {args.dtype}, decode "
          f"{'included' if not args.no_decode else 'excluded'}; ceilings {out['ceilings']}", flush=True)
    for depth in args.depths:
        impls = Impls(depth, args.tokenizer, device, dtype if cuda else torch.float32,
                      {"fp16": torch.float16, "bf16": torch.bfloat16}[args.autocast], args.engine_dir)
        for spec in args.schedules:
            sched = Schedule.parse(spec)
            for B in args.batches:
                labels = [(7 * i + 1) % 1000 for i in range(B)]
                flops = impls.flops(labels, sched, p, not args.no_decode) if cuda else None
                for impl in args.impls:
                    if impl == "eager" and B > args.eager_max_batch:
                        continue
                    try:
                        warm, t = time_call(impls.call(impl, labels, sched, p, 0, not args.no_decode), device,
                                            args.repeat if impl != "eager" else max(3, args.repeat // 2))
                    except Exception as e:  # noqa: BLE001 - report and continue with the rest
                        print(f"bench: {impl} failed on d={depth} {spec} B={B}: {type(e).__name__}: {str(e)[:200]}")
                        continue
                    med = statistics.median(t)
                    row = {"depth": depth, "schedule": str(sched), "steps": len(sched),
                           "image": "x".join(map(str, sched.image_size)), "batch": B, "impl": impl,
                           "warmup_s": round(warm, 3), "median_ms": round(med, 3), "min_ms": round(min(t), 3),
                           "max_ms": round(max(t), 3), "images_per_s": round(B / med * 1e3, 1), "repeats": len(t)}
                    if flops:
                        row["TFLOPs"] = round(flops / (med / 1e3) / 1e12, 1)
                    if B == 1 and impl.startswith("fast"):
                        bytes_ = impls.stream_bytes * len(sched) + (impls.decoder_bytes if not args.no_decode else 0)
                        row["weights_GBps"] = round(bytes_ / (med / 1e3) / 1e9, 1)
                    out["results"].append(row)
                    if args.partial:
                        write_text(Path(args.partial), json.dumps(out, indent=1))
                    print(f"bench: d={depth} {str(sched):>9} B={B:<3} {impl:<15} median {med:9.2f} ms "
                          f"[{min(t):.2f}, {max(t):.2f}]  {row['images_per_s']:8.1f} img/s  warm-up {warm:.1f} s",
                          flush=True)
                if cuda and "fast" in args.impls and args.breakdown:
                    try:
                        prof = impls.runtime("fast").profile(labels, sched, p, 0, not args.no_decode)
                        out["breakdown"].append({"depth": depth, "schedule": str(sched), "batch": B,
                                                 "eager_fast_ms_per_stage": {k: round(v, 3) for k, v in prof.items()}})
                    except Exception as e:  # noqa: BLE001
                        print(f"bench: breakdown failed on d={depth} {spec} B={B}: {type(e).__name__}")
                for rt in impls.fast.values():  # graphs and their pools of this configuration
                    rt.clear()
                if cuda:
                    torch.cuda.empty_cache()
        del impls
        if cuda:
            torch.cuda.empty_cache()
    return out


def print_table(res: dict) -> None:
    rows = {}
    for r in res["results"]:
        rows.setdefault((r["depth"], r["schedule"], r["batch"]), {})[r["impl"]] = r
    impls = list(dict.fromkeys(r["impl"] for r in res["results"]))
    print("\n| depth | schedule | batch | " + " | ".join(f"{i} ms (min-max)" for i in impls) + " | fast img/s |")
    print("|---|---|---|" + "---|" * len(impls) + "---|")
    for (d, s, b), by in rows.items():
        cells = [f"{by[i]['median_ms']:.2f} ({by[i]['min_ms']:.2f}-{by[i]['max_ms']:.2f})" if i in by else "-"
                 for i in impls]
        ips = by.get("fast", {}).get("images_per_s", "-")
        print(f"| {d} | {s} | {b} | " + " | ".join(cells) + f" | {ips} |")


def plot(res: dict, path: str) -> None:
    from .plot import line_plot
    series = {}
    for r in res["results"]:
        if r["image"] != "256x256":
            continue
        series.setdefault(f"{r['impl']} d{r['depth'].lstrip('d')} B={r['batch']}", []).append((r["steps"], r["median_ms"]))
    line_plot(series, path, f"FlexVAR 256px, steps vs latency ({res['device']}, "
                            f"decode {'incl.' if res['decode_included'] else 'excl.'})", "steps", "ms per batch")


def parse_args(argv=None):
    cuda = torch.cuda.is_available()
    ap = OneLineParser(prog="flexvar bench", description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--depths", default="d16" if cuda else "tiny", help="transformer presets, comma-separated")
    ap.add_argument("--tokenizer", default="vq16" if cuda else "tiny")
    ap.add_argument("--batches", default="1,8,32,64" if cuda else "1")
    ap.add_argument("--schedules", default=";".join(GPU_SCHEDULES) if cuda else "256-6;256-10",
                    help="schedules separated by ';'")
    ap.add_argument("--impls", default="eager,compile,fast" if cuda else "eager,fast",
                    help="eager, compile, fast, fast-VARIANT (VARIANT joins nographs, nokernels, nocompile, nchw, "
                         "nocdec, nosmall, sdpa/triton (qk_norm_cache + SDPA / the Triton attend, not attend_step), ingn (Inductor's GroupNorm in the decoder, not the Triton op), nofirst (no first-step table: the first step computed), rowsN (small_step for steps of <= N rows), skinnyN (the split-K projection and fc2 for steps of <= N rows; 0: never), nolt (the block GEMMs through F.linear, the cuBLASLt heuristic's first algorithm, not tuned per shape), nofuse (the decoder's convolution biases and residual sums added in passes of their own, not by the GroupNorm op's kernels), notaps (the decoder's norm_out + conv_out as the GroupNorm op and cuDNN's convolution, not group_norm_silu_taps), upnear/uptr (the decoder's upsampling + convolution as written / as one transposed convolution), sblock (sampling through the one-block-per-row kernels, not the many-rows kernel), gnil/gnl2 (the GroupNorm op's programs chunk by chunk across the images / image by image: group_norm.L2_ORDER off / on), kvhm (the KV cache head-major from batch 8: kv_head_major_min_batch), lastkv (the last step writes its keys and values into the cache: last_step_kv), tdec/tblk (coordinate-descent "
                         "tuning of the decoder/block kernels) with '-'), onnxruntime, aoti, tensorrt")
    ap.add_argument("--dtype", default="bf16" if cuda else "fp32", choices=("bf16", "fp16", "fp32"),
                    help="fast runtime dtype")
    ap.add_argument("--autocast", default="fp16", choices=("fp16", "bf16"),
                    help="autocast dtype of the eager baselines on GPU")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--eager-max-batch", type=int, default=64)
    ap.add_argument("--no-decode", action="store_true")
    ap.add_argument("--no-breakdown", dest="breakdown", action="store_false",
                    help="skip the per-stage breakdown of the fast runtime")
    ap.add_argument("--engine-dir", default=None,
                    help="exported engines (onnxruntime, aoti, tensorrt) kept here per model and precision, reused")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/steps_latency-<device>-<date>.json)")
    ap.add_argument("--plot", default=None, help="PNG path (default: beside the JSON)")
    args = ap.parse_args(argv)
    args.partial = None
    args.depths = [d if d in ("tiny", "test") or d.startswith("d") else f"d{d}" for d in args.depths.split(",")]
    try:
        args.batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        raise InputError(f"--batches: cannot read {args.batches!r}; write image counts such as 1,8,32") from None
    args.schedules = [s for s in args.schedules.split(";") if s]
    args.impls = args.impls.split(",")
    check_args(args)
    return args


def check_impl(impl: str) -> None:
    """InputError unless impl is one the bench runs: eager, compile, an exported backend, fast or fast-VARIANT."""
    if impl in ("eager", "compile", "fast", *ENGINE_IMPLS):
        return
    parts = impl.split("-")
    bad = [t for t in parts[1:] if t not in VARIANT_TOKENS
           and not any(t.startswith(p) and t[len(p):].isdigit() for p in ("rows", "skinny"))]
    if parts[0] != "fast" or len(parts) < 2 or bad:
        raise InputError(f"--impls: unknown implementation {impl!r}" + (f" (variant {bad[0]!r})" if bad else "")
                         + "; see flexvar bench --help")


def check_args(args) -> None:
    """Every argument checked before anything runs: one InputError naming the first bad one."""
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise InputError(f"--device: unknown device {args.device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device: CUDA is not available here")
    for d in args.depths:
        FlexVARConfig.from_name(d)
    VQVAEConfig.from_name(args.tokenizer)
    if not args.batches or min(args.batches) < 1:
        raise InputError(f"--batches: image counts must be >= 1, got {args.batches}")
    if not args.schedules:
        raise InputError("--schedules: no schedule given")
    for spec in args.schedules:
        Schedule.parse(spec)
    for impl in args.impls:
        check_impl(impl)
    if args.repeat < 1:
        raise InputError(f"--repeat: must be >= 1, got {args.repeat}")
    for path in (args.out, args.plot):
        if path is not None:
            folder = Path(path).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise InputError(f"{path}: cannot write there ({e.strerror or e})") from None
            why = writable_folder(folder)
            if why:
                raise InputError(f"{path}: cannot write there ({why})")


def main(argv=None) -> int:
    args = parse_args(argv)
    args.partial = str(Path(args.out).with_suffix(".partial.json")) if args.out else None
    t0 = time.perf_counter()
    res = run(args)
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    name = f"steps_latency-{res['device'].replace(' ', '_')}-{res['date'][:10]}"
    out = Path(args.out or f"bench/results/{name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(res, indent=1))
    if args.partial:
        Path(args.partial).unlink(missing_ok=True)
    png = args.plot or str(out.with_suffix(".png"))
    plot(res, png)
    print_table(res)
    print(f"\nbench: ran {len(res['results'])} configurations in {res['wall_s']} s on {res['device']}; "
          f"wrote {out} and {png}")
    return 0


if __name__ == "__main__":
    from flexvar.cli import main as cli_main  # bad arguments: one line and exit 2, as `flexvar bench`
    sys.exit(cli_main(["bench", *sys.argv[1:]]))
