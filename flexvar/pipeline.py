"""The user API: a transformer and its tokenizer on one device, generating images.

    pipe = Pipeline.from_checkpoints("FlexVARd16-epo179.pth", "FlexVAE.pth")
    out = pipe.generate(labels=[207, 88], schedule="256-10", seed=0)
    out.images  # uint8 (B, H, W, 3);  out.codes  # one (B, h, w) tensor per step
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import torch

from . import checkpoint, runtime
from .config import FlexVARConfig, VQVAEConfig
from .errors import InputError, as_integer
from .images import from_uint8, to_uint8
from .model import FlexVAR
from .random_weights import random_tokenizer, random_transformer
from .sampling import SamplingParams, check_seed
from .schedule import Schedule, ScheduleLike
from .vqvae import VQVAE

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def _gb(n: int) -> str:
    return f"{n / 1e9:.3g} GB" if n < 1e12 else f"{n / 1e12:.3g} TB"


def parse_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InputError(f"unknown device {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"device {device!r} is not supported: use cpu or cuda[:N]")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device} requested but CUDA is not available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


@dataclass
class GenerationOutput:
    """images: uint8 (B, H, W, 3) on the CPU (None when not decoded); codes: (B, h, w) per step."""

    codes: list[torch.Tensor]
    images: torch.Tensor | None
    schedule: Schedule
    labels: list[int] = field(default_factory=list)


class Pipeline:
    def __init__(self, model: FlexVAR, vae: VQVAE, device: str | torch.device = "cpu",
                 dtype: torch.dtype | str = torch.float32, source: str = "", fast: bool | None = None,
                 fast_options: dict | None = None):
        """fast: use the fast runtime (precomputation, CUDA graphs, fused kernels) for `generate`;
        None means on CUDA only. The reference runtime follows the release's random stream.
        fast_options: keyword arguments of `FastRuntime` (e.g. tune=("decoder",))."""
        checkpoint.check_pair(model.cfg, vae.cfg)
        self.device = _device(device)
        self.dtype = parse_dtype(dtype)
        self.use_fast = (self.device.type == "cuda") if fast is None else fast
        self.fast_options = dict(fast_options or {})
        model = model.to(device=self.device).eval()
        if self._first_step_from_float32(model):  # before the cast: step 1 from the checkpoint's own weights
            from .fast import build_first_step_table
            tables = dict(self.fast_options.get("first_step_tables") or {})
            if (1, 1) not in tables:
                tables[(1, 1)] = build_first_step_table(model, (1, 1), self.dtype)
            self.fast_options["first_step_tables"] = tables
        self.model = model.to(dtype=self.dtype)
        self.vae = vae.to(device=self.device, dtype=self.dtype).eval()
        self.source = source
        self._fast = None
        self._lock = threading.RLock()  # around the fast runtime's and the engines' shared state (see `generate`)
        self._engines: dict = {}

    def _first_step_from_float32(self, model: FlexVAR) -> bool:
        """Whether the fast runtime's first-step table for the 1x1 first scale (every schedule of the paper's) is
        built here from the float32 weights before they are cast to fp16/bf16 (`fast.build_first_step_table`):
        where the weights are float32 and the fast runtime this pipeline uses builds its table in float32
        (`fast.first_step_options` of its options)."""
        from .fast import first_step_options
        opts = self.fast_options
        table, float32 = first_step_options(self.device, self.dtype, opts.get("first_step_table"),
                                            opts.get("first_step_float32"))
        used = self.use_fast or bool(opts.get("first_step_table"))  # or asked for by name (tools on the CPU)
        return model.head.weight.dtype == torch.float32 and table and float32 and used

    @property
    def fast_runtime(self):
        """The FastRuntime of this pipeline (built on first use)."""
        if self._fast is None:
            from .fast import FastRuntime
            self._fast = FastRuntime(self.model, self.vae, **self.fast_options)
        return self._fast

    # ---- construction ----------------------------------------------------------------
    @classmethod
    def from_checkpoints(cls, var_ckpt: str | os.PathLike, vae_ckpt: str | os.PathLike,
                         device: str | torch.device = "cpu", dtype: torch.dtype | str = torch.float32,
                         fast: bool | None = None, fast_options: dict | None = None) -> "Pipeline":
        """Load the release's files (or safetensors) unchanged."""
        device, dtype = _device(device), parse_dtype(dtype)
        model, _ = checkpoint.load_transformer(var_ckpt)
        vae, _ = checkpoint.load_tokenizer(vae_ckpt)
        return cls(model, vae, device, dtype, source=f"{var_ckpt} + {vae_ckpt}", fast=fast, fast_options=fast_options)

    @classmethod
    def from_random(cls, transformer: str = "tiny", tokenizer: str = "tiny", seed: int = 0,
                    device: str | torch.device = "cpu", dtype: torch.dtype | str = torch.float32,
                    fast: bool | None = None, fast_options: dict | None = None) -> "Pipeline":
        """Seeded random weights of named presets: the embedded default (images are not meaningful)."""
        device, dtype = _device(device), parse_dtype(dtype)
        model = random_transformer(FlexVARConfig.from_name(transformer), seed)
        vae = random_tokenizer(VQVAEConfig.from_name(tokenizer), seed + 1)
        return cls(model, vae, device, dtype, source=f"random weights ({transformer}/{tokenizer}, seed {seed})",
                   fast=fast, fast_options=fast_options)

    def engines(self, backend: str, engine_dir, rebuild: bool = False):
        """The engines of `backend` in `engine_dir` (exported/built on first use, then reused)."""
        from .engine_runtime import BACKENDS, EngineSet
        if backend not in BACKENDS:
            raise InputError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
        if engine_dir is None:
            raise InputError(f"backend {backend} needs an engine directory")
        key = (backend, os.fspath(engine_dir))
        with self._lock:  # one export/build per directory, whichever thread asks first
            if key not in self._engines:
                self._engines[key] = EngineSet(self.model, self.vae, backend, engine_dir, self.device, rebuild)
            return self._engines[key]

    @property
    def num_classes(self) -> int:
        return self.model.cfg.num_classes

    # ---- input checks -----------------------------------------------------------------
    def labels_tensor(self, labels, allow_null: bool = False) -> torch.Tensor:
        """Labels as int64 on the device; 0 .. classes-1 (and the null class when allowed)."""
        if isinstance(labels, torch.Tensor):
            labels = labels.flatten().tolist()
        elif hasattr(labels, "tolist"):  # NumPy arrays and scalars
            labels = labels.tolist()
        if isinstance(labels, int):
            labels = [labels]
        elif isinstance(labels, (str, bytes)) or not hasattr(labels, "__iter__"):
            raise InputError(f"labels must be class indices (a list, an array or one integer), got {labels!r}")
        labels = list(labels)
        if not labels:
            raise InputError("no labels given")
        top = self.num_classes if allow_null else self.num_classes - 1
        checked = []
        for lab in labels:
            value = as_integer(lab)
            if value is None:
                raise InputError(f"label {lab!r} is not an integer")
            if not 0 <= value <= top:
                raise InputError(f"label {value} is out of range 0-{top}")
            checked.append(value)
        return torch.tensor(checked, dtype=torch.long, device=self.device)

    def _codes(self, codes_Bhw: torch.Tensor, what: str = "codes") -> torch.Tensor:
        if not isinstance(codes_Bhw, torch.Tensor) or codes_Bhw.dim() != 3 or codes_Bhw.is_floating_point() \
                or codes_Bhw.is_complex() or codes_Bhw.dtype == torch.bool or min(codes_Bhw.shape) < 1:
            got = (f"{codes_Bhw.dtype} {tuple(codes_Bhw.shape)}" if isinstance(codes_Bhw, torch.Tensor)
                   else type(codes_Bhw).__name__)
            raise InputError(f"{what} must be an integer tensor (B, h, w) of at least one code, got {got}")
        V = self.model.cfg.vocab_size
        if codes_Bhw.numel() and (codes_Bhw.min() < 0 or codes_Bhw.max() >= V):
            raise InputError(f"{what} must lie in 0-{V - 1}")
        return codes_Bhw.to(self.device, torch.long)

    def memory_floor(self, schedule: Schedule, batch: int, decode: bool = True) -> dict[str, int]:
        """Bytes that a generation of `batch` images over `schedule` cannot do without on any runtime: the KV
        cache (every layer's keys and values of every token, for both halves of the guidance), the largest
        step's guided float32 logits, and the decoder's full-resolution activation (one tensor of its first
        level's width). A lower bound: the runtimes need more."""
        cfg, item = self.model.cfg, torch.finfo(self.dtype).bits // 8
        out = {"KV cache": cfg.depth * 2 * schedule.total_tokens * 2 * batch * cfg.width * item,
               "logits": batch * max(h * w for h, w in schedule) * cfg.vocab_size * 4}
        if decode:
            H, W = schedule.image_size
            vcfg = self.vae.cfg
            out["decoder"] = batch * vcfg.base_channels * vcfg.channel_mult[0] * H * W * item
        return out

    def check_fits(self, schedule: Schedule, batch: int, decode: bool = True) -> None:
        """InputError where `memory_floor` exceeds the device's whole memory (the run cannot fit, whatever else is
        free); a run that passes may still run out, which the command line reports as such."""
        if self.device.type == "cuda":
            total = torch.cuda.get_device_properties(self.device).total_memory
        elif self.device.type == "cpu" and hasattr(os, "sysconf"):
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        else:
            return
        need = self.memory_floor(schedule, batch, decode)
        if sum(need.values()) > total:
            parts = ", ".join(f"{k} {_gb(v)}" for k, v in need.items())
            raise InputError(f"schedule {schedule} at batch {batch} needs at least {_gb(sum(need.values()))} "
                             f"({parts}); {self.device} has {_gb(total)}: use fewer or smaller steps or fewer images")

    # ---- API ----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, labels, schedule: ScheduleLike = "256-10", cfg: float = 2.5, guidance: str = "ramp",
                 top_k: int = 900, top_p: float = 0.95, seed: int = 0, max_pn: int = 16,
                 greedy_off_grid: bool = True, decode: bool = True, fast: bool | None = None,
                 backend: str = "torch", engine_dir: str | os.PathLike | None = None,
                 rebuild: bool = False) -> GenerationOutput:
        """Class-conditional generation over any schedule (release defaults).

        fast: override the pipeline's choice of torch runtime for this call (see `Pipeline.__init__`).
        backend: "torch", or "onnxruntime" / "tensorrt" with `engine_dir`, where the artifacts are
        built on first use and checked against these weights afterwards (`rebuild` replaces foreign ones).
        """
        sched = Schedule.parse(schedule)
        params = SamplingParams(cfg=cfg, guidance=guidance, top_k=top_k, top_p=top_p, max_pn=max_pn,
                                greedy_off_grid=greedy_off_grid)
        seed = check_seed(seed)
        labels_B = self.labels_tensor(labels)
        self.check_fits(sched, labels_B.shape[0], decode)
        if backend != "torch":
            from . import engine_runtime
            with self._lock:  # engines keep execution contexts and buffers: one generation at a time
                eng = self.engines(backend, engine_dir, rebuild)
                gen = torch.Generator(self.device).manual_seed(int(seed))
                codes = engine_runtime.generate_codes(self.model, self.vae.quantize, eng, labels_B, sched, params,
                                                      gen)
                images = engine_runtime.decode(eng, codes[-1]).cpu() if decode else None
        elif self.use_fast if fast is None else fast:
            with self._lock:  # the runtime's plans are shared buffers: one generation at a time, copied out
                codes, images = self.fast_runtime.generate(labels_B.tolist(), sched, params, int(seed), decode)
                codes = [c.to("cpu", copy=True) for c in codes]
                images = images.to("cpu", copy=True) if images is not None else None
        else:
            gen = torch.Generator(self.device).manual_seed(int(seed))
            codes = runtime.generate_codes(self.model, self.vae.quantize, labels_B, sched, params, gen)
            images = self.decode(codes[-1]) if decode else None
        return GenerationOutput([c.cpu() for c in codes], images, sched, labels_B.tolist())

    @torch.no_grad()
    def teacher_forced_logits(self, labels, codes: list[torch.Tensor], schedule: ScheduleLike) -> list[torch.Tensor]:
        """Conditional logits (B, h*w, V) of every step given the codes of the earlier ones; no guidance.
        Label `num_classes` (1000) is the unconditional class."""
        sched = Schedule.parse(schedule)
        labels_B = self.labels_tensor(labels, allow_null=True)
        if len(codes) < len(sched) - 1:
            raise InputError(f"{len(sched)} steps need the codes of at least {len(sched) - 1} steps, got {len(codes)}")
        checked = []
        for si, c in enumerate(codes[: len(sched) - 1]):
            c = self._codes(c, f"codes of step {si + 1}")
            if tuple(c.shape) != (labels_B.shape[0], *sched.steps[si]):
                raise InputError(f"codes of step {si + 1} have shape {tuple(c.shape)}, "
                                 f"expected {(labels_B.shape[0], *sched.steps[si])}")
            checked.append(c)
        return runtime.teacher_forced_logits(self.model, self.vae.quantize, labels_B, checked, sched)

    @torch.no_grad()
    def encode(self, images_BHW3: torch.Tensor, schedule: ScheduleLike) -> list[torch.Tensor]:
        """Multi-scale encode: codes (B, h, w) of every step of the schedule."""
        sched = Schedule.parse(schedule)
        x = from_uint8(images_BHW3)
        if x.shape[2] % 16 or x.shape[3] % 16:
            raise InputError(f"image sides must be multiples of 16, got {x.shape[2]}x{x.shape[3]}")
        th, tw = x.shape[2] // 16, x.shape[3] // 16
        for h, w in sched:
            if h > th or w > tw:
                raise InputError(f"schedule step {h}x{w} is finer than the image's {th}x{tw} tokens: a multi-scale "
                                 f"encode only resizes the image's latents down")
        x = x.to(self.device, self.dtype)
        return [c.cpu() for c in self.vae.encode_multiscale(x, sched.steps)]

    @torch.no_grad()
    def decode(self, codes_Bhw: torch.Tensor) -> torch.Tensor:
        """uint8 images (B, 16h, 16w, 3) of codes (B, h, w)."""
        return to_uint8(self.vae.decode_codes(self._codes(codes_Bhw)))
