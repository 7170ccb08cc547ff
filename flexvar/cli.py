"""`flexvar` command line: generate, info.

Bad input prints one line `flexvar: error: ...` on stderr and exits 2; nothing is
left on disk (outputs are written to a temporary folder and moved into place).
Set FLEXVAR_DEBUG=1 to see tracebacks of unexpected failures.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .errors import FlexVARError, InputError, first_line
from .files import writable_folder


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are InputErrors: one line from `main`, no usage dump."""

    def error(self, message):
        raise InputError(message)


def parse_labels(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            out.append(int(part))
        except ValueError:
            raise InputError(f"label {part!r} is not an integer") from None
    return out


def _add_common_args(p: argparse.ArgumentParser, schedule_default: str | None) -> None:
    p.add_argument("--var-ckpt", help="transformer checkpoint (release .pth or .safetensors)")
    p.add_argument("--vae-ckpt", help="tokenizer checkpoint (release FlexVAE.pth or .safetensors)")
    p.add_argument("--labels", required=True, help="comma-separated ImageNet classes, e.g. 207,88")
    p.add_argument("--schedule", default=schedule_default,
                   help="preset (256-6..256-13, 384-11, 512-12, 512-15), sides '1,2,4,8' or pairs '1x2,2x4' "
                        "(default: 256-10 for generate, the output size's default for the edits)")
    p.add_argument("--cfg", type=float, default=2.5)
    p.add_argument("--guidance", default="ramp", help="ramp (release default) or constant")
    p.add_argument("--top-k", type=int, default=900)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--save-codes", action="store_true", help="also write codes.txt: 'image step h w code ...'")
    p.add_argument("--backend", default="torch", help="torch, onnxruntime, aoti or tensorrt")
    p.add_argument("--engine-dir", help="artifact directory of the exported backends (built on first use)")
    p.add_argument("--rebuild", action="store_true", help="replace artifacts built for other weights or tools")
    p.add_argument("--tune-decoder", action="store_true",
                   help="fast runtime on CUDA: tune the compiled decoder's kernels (level with the default on an "
                        "H100 since the Triton GroupNorm; the first call per batch and size compiles for about "
                        "2 minutes instead of 20 s)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="flexvar",
                           description="FlexVAR inference: generate and edit images, inspect checkpoints.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    g = sub.add_parser("generate", help="class-conditional generation; without checkpoints, an embedded "
                                        "random-weight default")
    _add_common_args(g, None)  # 256-10 unless --schedule or --size/--steps
    g.add_argument("--size", help="final image size HxW (or one side) in pixels; with --steps builds a schedule")
    g.add_argument("--steps", type=int, help="number of steps for --size")
    g.add_argument("--max-pn", type=int, default=16, help="sides above this get full cfg (ramp) and greedy sampling")
    g.add_argument("--no-greedy-off-grid", dest="greedy_off_grid", action="store_false",
                   help="sample off-grid steps with --top-k too (the release samples them greedily)")
    x = sub.add_parser("export", help="build the ONNX (and TensorRT) artifacts of a model ahead of time")
    x.add_argument("--var-ckpt")
    x.add_argument("--vae-ckpt")
    x.add_argument("--backend", default="onnx", help="onnx (ONNX files for onnxruntime), tensorrt or aoti")
    x.add_argument("--buckets", default=None,
                   help="token-count bucket edges (default 64,256,1024,4096): one TensorRT optimization profile or "
                        "AOTInductor package each (tensorrt and aoti only: ONNX graphs take any step size)")
    x.add_argument("--out", required=True, help="artifact directory")
    x.add_argument("--device", default="cpu")
    x.add_argument("--dtype", default="float32")
    x.add_argument("--rebuild", action="store_true", help="replace artifacts built for other weights or tools")
    for name, text in (("inpaint", "generate inside a mask (white = generate), keep the image elsewhere"),
                       ("expand", "generate a larger canvas around the image"),
                       ("refine", "continue the image's schedule to a larger size")):
        e = sub.add_parser(name, help=text)
        _add_common_args(e, None)
        e.add_argument("--image", required=True, help="input image file")
        e.add_argument("--size", required=name != "inpaint",
                       help="output size HxW in pixels" + (" (default: the image's)" if name == "inpaint" else ""))
        if name == "inpaint":
            e.add_argument("--mask", required=True, help="mask image of the input's size; white marks what to generate")
            e.add_argument("--paste-back", action="store_true", help="keep the input's pixels outside the mask")
        if name == "expand":
            e.add_argument("--placement", default="center", help="'center' or TOPxLEFT in pixels (multiples of 16)")
    sub.add_parser("bench", help="steps-vs-latency benchmark: eager release algorithm, torch.compile, fast "
                                 "runtime (see flexvar bench --help)")
    i = sub.add_parser("info", help="say what checkpoint files are")
    i.add_argument("files", nargs="+")
    return parser


def parse_size(text: str) -> tuple[int, int]:
    try:
        hw = [int(s) for s in text.lower().split("x")]
    except ValueError:
        hw = []
    if len(hw) not in (1, 2) or min(hw) < 1:
        raise InputError(f"cannot read size {text!r}; write HxW or one side in pixels")
    return (hw[0], hw[0]) if len(hw) == 1 else (hw[0], hw[1])


def parse_placement(text: str) -> tuple[int, int]:
    """TOPxLEFT in pixels, each >= 0."""
    try:
        tl = [int(s) for s in text.lower().split("x")]
    except ValueError:
        tl = []
    if len(tl) != 2 or min(tl) < 0:
        raise InputError(f"cannot read placement {text!r}; write 'center' or TOPxLEFT in pixels, e.g. 0x64")
    return tl[0], tl[1]


def resolve_schedule(args):
    from .schedule import Schedule
    if args.size is None:
        if args.steps is not None:
            raise InputError("--steps needs --size")
        return Schedule.parse(args.schedule or "256-10")
    if args.schedule is not None:
        raise InputError("give --schedule or --size with --steps, not both")
    if args.steps is None:
        raise InputError("--size needs --steps")
    return Schedule.from_size(parse_size(args.size), args.steps)


def check_backend(args) -> None:
    """--backend is torch or an exported backend, which needs --engine-dir: checked before anything is loaded."""
    from .engine_runtime import BACKENDS
    if args.backend not in BACKENDS:
        raise InputError(f"unknown backend {args.backend!r}; use one of {', '.join(BACKENDS)}")
    if args.backend != "torch" and not args.engine_dir:
        raise InputError(f"--backend {args.backend} needs --engine-dir")


def load_pipeline(args):
    from .pipeline import Pipeline
    if (args.var_ckpt is None) != (args.vae_ckpt is None):
        raise InputError("give both --var-ckpt and --vae-ckpt, or neither for the embedded default")
    if args.var_ckpt is None:
        print("load: no checkpoints given: embedded default, tiny architecture with RANDOM weights "
              "(the images are not meaningful)")
        return Pipeline.from_random(device=args.device, dtype=args.dtype, fast_options=fast_options(args))
    return Pipeline.from_checkpoints(args.var_ckpt, args.vae_ckpt, device=args.device, dtype=args.dtype,
                                     fast_options=fast_options(args))


def fast_options(args) -> dict:
    """FastRuntime keyword arguments from the command line."""
    return {"tune": ("decoder",)} if getattr(args, "tune_decoder", False) else {}


def codes_lines(codes, image_offset: int = 0) -> list[str]:
    """One line per image and step: `image step h w code code ...` (row-major)."""
    lines = []
    for b in range(codes[0].shape[0]):
        for si, c in enumerate(codes):
            h, w = c.shape[1:]
            lines.append(" ".join([str(b + image_offset), str(si), str(h), str(w)] + [str(v) for v in c[b].flatten().tolist()]))
    return lines


class OutputDir:
    """Files written into a hidden temporary folder, moved into `out` only on success."""

    def __init__(self, out: str):
        self.out = Path(out)
        self.tmp = Path(tempfile.mkdtemp(prefix=".flexvar-", dir=self.check(out)))

    @staticmethod
    def check(out: str) -> Path:
        """Fail early (before any work) if `out` cannot be written: its parent must be a folder where a folder can
        be made (tried, then removed), and `out`, where it exists, a writable folder. Returns the parent."""
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise InputError(f"{out}: exists and is not a folder")
        parent = out.parent if out.parent != Path("") else Path(".")
        if not parent.is_dir():
            raise InputError(f"{parent}: no such folder for the output")
        for where in (parent, out) if out.is_dir() else (parent,):
            why = writable_folder(where)
            if why:
                raise InputError(f"{out}: cannot write the output there ({why})")
        return parent

    def path(self, name: str) -> Path:
        return self.tmp / name

    def commit(self) -> list[Path]:
        self.out.mkdir(exist_ok=True)
        done = []
        for f in sorted(self.tmp.iterdir()):
            os.replace(f, self.out / f.name)
            done.append(self.out / f.name)
        self.tmp.rmdir()
        return done

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def write_outputs(args, out, labels) -> list[Path]:
    """PNG per image (and codes.txt), all or nothing."""
    from .images import save_png
    out_dir = OutputDir(args.out)
    try:
        for b, lab in enumerate(labels):
            save_png(out.images[b], out_dir.path(f"{b:04d}_class{lab}.png"))
        if args.save_codes:
            out_dir.path("codes.txt").write_text("\n".join(codes_lines(out.codes)) + "\n")
        return out_dir.commit()
    except BaseException:
        out_dir.discard()
        raise


def cmd_generate(args) -> int:
    from .sampling import SamplingParams, check_seed
    labels = parse_labels(args.labels)
    schedule = resolve_schedule(args)
    SamplingParams(cfg=args.cfg, guidance=args.guidance, top_k=args.top_k, top_p=args.top_p,
                   max_pn=args.max_pn, greedy_off_grid=args.greedy_off_grid)  # validate before loading
    check_seed(args.seed)
    check_backend(args)
    OutputDir.check(args.out)
    pipe = load_pipeline(args)
    pipe.labels_tensor(labels)
    t0 = time.perf_counter()
    out = pipe.generate(labels, schedule, cfg=args.cfg, guidance=args.guidance, top_k=args.top_k,
                        top_p=args.top_p, seed=args.seed, max_pn=args.max_pn, greedy_off_grid=args.greedy_off_grid,
                        backend=args.backend, engine_dir=args.engine_dir, rebuild=args.rebuild)
    dt = time.perf_counter() - t0
    files = write_outputs(args, out, labels)
    H, W = schedule.image_size
    print(f"generate: {len(labels)} image(s) {H}x{W}, {len(schedule)} steps ({schedule}), {dt:.2f} s "
          f"on {pipe.device} incl. decode; weights: {pipe.source}")
    print(f"generate: wrote {len(files)} file(s) to {args.out}")
    return 0


def _read_image(path: str, what: str, command: str):
    """An image file as uint8 (H, W, 3); sides not multiples of 16 are resized, with a warning."""
    from .images import load_image, resize_to_tokens
    img = load_image(path)
    if min(img.shape[:2]) < 16:
        raise InputError(f"{path}: image {img.shape[0]}x{img.shape[1]} is smaller than one 16x16 token")
    fixed = resize_to_tokens(img)
    if fixed.shape != img.shape:
        print(f"{command}: warning: {what} {img.shape[0]}x{img.shape[1]} resized to "
              f"{fixed.shape[0]}x{fixed.shape[1]} (sides must be multiples of 16)", file=sys.stderr)
    return img, fixed


def cmd_edit(args) -> int:
    from . import editing
    from .images import load_mask, resize_image
    from .sampling import SamplingParams, check_seed
    from .schedule import Schedule
    labels = parse_labels(args.labels)
    SamplingParams(cfg=args.cfg, guidance=args.guidance, top_k=args.top_k, top_p=args.top_p)
    check_seed(args.seed)
    check_backend(args)
    schedule = None if args.schedule is None else Schedule.parse(args.schedule)
    size = parse_size(args.size) if args.size else None
    OutputDir.check(args.out)
    raw, img = _read_image(args.image, "image", args.command)
    kw = dict(cfg=args.cfg, guidance=args.guidance, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
              backend=args.backend, engine_dir=args.engine_dir)
    if args.command == "inpaint":
        mask = load_mask(args.mask)
        if tuple(mask.shape) != tuple(raw.shape[:2]):
            raise InputError(f"mask is {mask.shape[0]}x{mask.shape[1]}, the image is {raw.shape[0]}x{raw.shape[1]}")
        if not mask.any():  # here, and again once the mask is resized to the output
            raise InputError("mask is empty: nothing to generate")
        pipe = load_pipeline(args)
        # the output's size is known: refuse one that cannot fit before resizing the image to it
        pipe.check_fits(editing.final_schedule(schedule, size or tuple(img.shape[:2])), len(labels))
        if size is not None and size != tuple(img.shape[:2]):
            img = resize_image(raw, size)
        mask = resize_image(mask, tuple(img.shape[:2]), nearest=True)
        if not mask.any():
            raise InputError("mask is empty: nothing to generate")
        out = editing.inpaint(pipe, img, mask, labels, schedule, paste_back=args.paste_back, **kw)
    else:
        pipe = load_pipeline(args)
        if args.command == "expand":
            place = args.placement
            if place != "center":
                place = parse_placement(place)
            out = editing.expand(pipe, img, labels, size, placement=place, schedule=schedule, **kw)
        else:
            out = editing.refine(pipe, img, labels, size, schedule=schedule, **kw)
    files = write_outputs(args, out, labels)
    H, W = out.schedule.image_size
    print(f"{args.command}: {len(labels)} image(s) {H}x{W}, {len(out.schedule)} steps ({out.schedule}); "
          f"weights: {pipe.source}")
    print(f"{args.command}: wrote {len(files)} file(s) to {args.out}")
    return 0


def cmd_export(args) -> int:
    from .engine_runtime import EngineSet
    from .export.graphs import make_buckets
    backends = {"onnx": "onnxruntime", "tensorrt": "tensorrt", "aoti": "aoti"}
    if args.backend not in backends:
        raise InputError(f"unknown export backend {args.backend!r}; use onnx, tensorrt or aoti")
    from .export.graphs import BUCKETS, MAX_PAST
    if args.buckets is not None and args.backend == "onnx":
        raise InputError("--buckets applies to --backend tensorrt and aoti (ONNX graphs take any step size)")
    try:
        edges = (sorted({int(e) for e in args.buckets.split(",")}) if args.buckets is not None
                 else [b.max_tokens for b in BUCKETS])
    except ValueError:
        raise InputError(f"cannot read bucket edges {args.buckets!r}") from None
    if not edges or edges[0] < 1 or edges[-1] > MAX_PAST:
        raise InputError(f"bucket edges must be token counts from 1 to {MAX_PAST} (what the engines accept), "
                         f"got {args.buckets}")
    OutputDir.check(args.out)
    pipe = load_pipeline(args)
    EngineSet(pipe.model, pipe.vae, backends[args.backend], args.out, pipe.device, rebuild=args.rebuild,
              buckets=make_buckets(tuple(edges)))  # exports (and builds) what is missing
    from .export import load_manifest
    m = load_manifest(args.out)
    if args.backend in ("aoti", "tensorrt"):
        buckets = list(m[args.backend]["buckets"])
    else:
        buckets = [b["name"] for b in m["buckets"]]
    print(f"export: {args.out}: weights {m['fingerprint']}, {m['precision']}, opset {m['opset']}, "
          f"buckets {', '.join(buckets)}; graphs {', '.join(m['graphs'])}")
    return 0


def cmd_info(args) -> int:
    from .checkpoint import describe
    for i, f in enumerate(args.files):
        if i:
            print()
        print(describe(f))
    return 0


COMMANDS = {"generate": cmd_generate, "info": cmd_info, "export": cmd_export, "inpaint": cmd_edit, "expand": cmd_edit,
            "refine": cmd_edit}


def out_of_memory(e: BaseException) -> bool:
    """Whether e is an allocator's refusal (host or GPU memory), which a run of this size on this machine
    meets, rather than a fault of the program."""
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("can't allocate memory" in text or "CUDA out of memory" in text)


def main(argv: list[str] | None = None) -> int:
    try:
        argv = sys.argv[1:] if argv is None else argv
        if argv[:1] == ["bench"]:  # its own parser: flexvar bench --help
            from .bench.steps_latency import main as bench_main
            return bench_main(argv[1:])
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except FlexVARError as e:
        print(f"flexvar: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("flexvar: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - never a traceback unless asked for
        if os.environ.get("FLEXVAR_DEBUG"):
            raise
        msg = first_line(e)
        if out_of_memory(e):
            print(f"flexvar: error: out of memory: {msg} (use fewer or smaller steps or fewer images)",
                  file=sys.stderr)
            return 1
        print(f"flexvar: internal error: {type(e).__name__}: {msg} (FLEXVAR_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
