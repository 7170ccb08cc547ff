"""Image-to-image without fine-tuning (paper, section 4.4): in/out-painting, expansion, refinement.

All three force known codes at every step of a schedule and sample the rest, through the
runtimes' `forced` hook: the reference torch runtime, or any exported backend (`backend=`,
`engine_dir=`), whose encoder, transformer step and decoder engines then do the work.

Which tokens are forced: a token of the final (full-resolution) map is *known* when no
generated pixel falls in its 16x16 patch. A token of a coarser step (h, w) is forced when every
final token it area-averages is known, and its code is the quantized area-average of the input's
latents there, i.e. the multi-scale encode of the input. So a token the mask partly covers is
generated, and forced codes never mix known and unknown content.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import runtime
from .errors import InputError, as_integer
from .images import from_uint8, to_uint8
from .pipeline import GenerationOutput, Pipeline
from .sampling import SamplingParams, check_seed
from .schedule import PATCH, Schedule, ScheduleLike

DEFAULT_STEPS = 10


def _image(img: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) uint8, sides multiples of 16 and at least one token."""
    if img.dim() == 4 and img.shape[0] == 1:
        img = img[0]
    if img.dtype != torch.uint8 or img.dim() != 3 or img.shape[-1] != 3:
        raise InputError(f"image must be uint8 (H, W, 3), got {img.dtype} {tuple(img.shape)}")
    H, W = img.shape[:2]
    if H < PATCH or W < PATCH:
        raise InputError(f"image {H}x{W} is smaller than one {PATCH}x{PATCH} token")
    if H % PATCH or W % PATCH:
        raise InputError(f"image sides must be multiples of {PATCH}, got {H}x{W} (resize it first)")
    return img


def _default_schedule(hw_px: tuple[int, int]) -> Schedule:
    long = max(hw_px) // PATCH
    return Schedule.from_size(hw_px, min(DEFAULT_STEPS, long))


def final_schedule(schedule: ScheduleLike | None, hw_px: tuple[int, int]) -> Schedule:
    """The schedule of an edit whose output is hw_px (H, W) pixels: the given one, which must end there, or the
    default for that size."""
    sched = _default_schedule(hw_px) if schedule is None else Schedule.parse(schedule)
    if sched.image_size != tuple(hw_px):
        raise InputError(f"schedule ends at {sched.image_size[0]}x{sched.image_size[1]} px, "
                         f"the output is {hw_px[0]}x{hw_px[1]} px")
    return sched


def forced_codes(pipe: Pipeline, latent_1Chw: torch.Tensor, known_hw: torch.Tensor,
                 schedule: Schedule) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per step (codes (1, h, w), keep (1, h, w)) from a final-resolution latent and its known tokens."""
    out = []
    known = known_hw.float()[None, None]
    for hw in schedule:
        frac = F.interpolate(known, size=hw, mode="area")[0]
        keep = frac >= 1 - 1e-6
        z = F.interpolate(latent_1Chw * known.to(latent_1Chw.dtype), size=hw, mode="area")
        out.append((pipe.vae.quantize.quantize(z), keep))
    return out


def _check(pipe: Pipeline, labels, schedule: Schedule, seed) -> None:
    """An edit's labels, seed and size checked once its schedule is known, before the input is encoded."""
    check_seed(seed)
    pipe.check_fits(schedule, len(pipe.labels_tensor(labels)))


def _run(pipe: Pipeline, labels, schedule: Schedule, forced, cfg, guidance, top_k, top_p, seed,
         eng=None) -> GenerationOutput:
    """Generate with forced codes on the reference runtime, or on an exported backend's engines (`_check`ed)."""
    params = SamplingParams(cfg=cfg, guidance=guidance, top_k=top_k, top_p=top_p)
    labels_B = pipe.labels_tensor(labels)
    B = labels_B.shape[0]
    forced_B = [(c.to(pipe.device).expand(B, -1, -1), k.to(pipe.device).expand(B, -1, -1)) for c, k in forced]
    gen = torch.Generator(pipe.device).manual_seed(int(seed))
    if eng is not None:
        from . import engine_runtime
        with pipe._lock:  # the engines' state is shared by the pipeline's callers (Pipeline.generate)
            codes = engine_runtime.generate_codes(pipe.model, pipe.vae.quantize, eng, labels_B, schedule, params,
                                                  gen, forced=forced_B)
            images = engine_runtime.decode(eng, codes[-1]).cpu()
    elif pipe.use_fast:  # the fast runtime (CUDA graphs) takes the forced codes as plan buffers
        with pipe._lock:  # which later calls overwrite: copied out before another call runs
            codes, images = pipe.fast_runtime.generate(labels_B.tolist(), schedule, params, int(seed), True,
                                                       forced=forced_B)
            codes, images = [c.to("cpu", copy=True) for c in codes], images.to("cpu", copy=True)
    else:
        codes = runtime.generate_codes(pipe.model, pipe.vae.quantize, labels_B, schedule, params, gen,
                                       forced=forced_B)
        images = pipe.decode(codes[-1])
    return GenerationOutput([c.cpu() for c in codes], images, schedule, labels_B.tolist())


def _engines(pipe: Pipeline, backend: str, engine_dir):
    return None if backend == "torch" else pipe.engines(backend, engine_dir)


def _latent(pipe: Pipeline, img_HW3: torch.Tensor, eng=None) -> torch.Tensor:
    if eng is not None:
        from . import engine_runtime
        with pipe._lock:
            return engine_runtime.encode_latent(eng, img_HW3[None].to(pipe.device)).float()
    x = from_uint8(img_HW3[None]).to(pipe.device, pipe.dtype)
    return pipe.vae.encode_latent(x).float()


@torch.no_grad()
def inpaint(pipe: Pipeline, image: torch.Tensor, mask: torch.Tensor, labels, schedule: ScheduleLike | None = None,
            cfg: float = 2.5, guidance: str = "ramp", top_k: int = 900, top_p: float = 0.95, seed: int = 0,
            paste_back: bool = False, backend: str = "torch", engine_dir=None) -> GenerationOutput:
    """Generate where `mask` (H, W) is True, keep the image's codes elsewhere (out-painting: mask the border).

    With paste_back, pixels outside the mask are the input's own.
    """
    img = _image(image)
    H, W = img.shape[:2]
    mask = torch.as_tensor(mask)
    if mask.dim() != 2 or tuple(mask.shape) != (H, W):
        raise InputError(f"mask is {'x'.join(map(str, mask.shape))}, the image is {H}x{W}")
    mask = mask.bool()
    if not mask.any():
        raise InputError("mask is empty: nothing to generate")
    sched = final_schedule(schedule, (H, W))
    _check(pipe, labels, sched, seed)
    # a final token is known when none of its pixels is masked
    known = ~F.max_pool2d(mask.float()[None, None], PATCH)[0, 0].bool()
    eng = _engines(pipe, backend, engine_dir)
    forced = forced_codes(pipe, _latent(pipe, img, eng), known.to(pipe.device), sched)
    out = _run(pipe, labels, sched, forced, cfg, guidance, top_k, top_p, seed, eng)
    if paste_back:
        out.images = torch.where(mask[None, :, :, None], out.images, img[None])
    return out


def _pixels(size, what: str, pair: str = "(H, W)") -> tuple[int, int]:
    """Two integers from a pair, or an InputError naming `what`."""
    try:
        a, b = (as_integer(v) for v in size)
    except (TypeError, ValueError):
        a = b = None
    if a is None or b is None:
        raise InputError(f"{what} must be a pair of integers {pair} in pixels, got {size!r}")
    return a, b


def _placement(placement, canvas: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    (Hc, Wc), (H, W) = canvas, size
    if placement == "center":
        top, left = (Hc - H) // 2 // PATCH * PATCH, (Wc - W) // 2 // PATCH * PATCH
    else:
        top, left = _pixels(placement, "placement (other than 'center')", "(top, left)")
    if top % PATCH or left % PATCH:
        raise InputError(f"placement ({top}, {left}) must be multiples of {PATCH} pixels")
    if top < 0 or left < 0 or top + H > Hc or left + W > Wc:
        raise InputError(f"an image of {H}x{W} at ({top}, {left}) does not fit the {Hc}x{Wc} canvas")
    return top, left


@torch.no_grad()
def expand(pipe: Pipeline, image: torch.Tensor, labels, size: tuple[int, int], placement="center",
           schedule: ScheduleLike | None = None, cfg: float = 2.5, guidance: str = "ramp", top_k: int = 900,
           top_p: float = 0.95, seed: int = 0, backend: str = "torch", engine_dir=None) -> GenerationOutput:
    """Generate a larger canvas of `size` (H, W) pixels with the input's codes forced where it sits.

    placement: "center" or (top, left) in pixels, multiples of 16.
    """
    img = _image(image)
    H, W = img.shape[:2]
    Hc, Wc = _pixels(size, "expansion size")
    if Hc % PATCH or Wc % PATCH:
        raise InputError(f"expansion size {Hc}x{Wc} must be a multiple of {PATCH}")
    if Hc < H or Wc < W or (Hc, Wc) == (H, W):
        raise InputError(f"expansion {Hc}x{Wc} must be larger than the {H}x{W} input")
    top, left = _placement(placement, (Hc, Wc), (H, W))
    sched = final_schedule(schedule, (Hc, Wc))
    _check(pipe, labels, sched, seed)
    eng = _engines(pipe, backend, engine_dir)
    z = _latent(pipe, img, eng)
    t, l = top // PATCH, left // PATCH
    latent = torch.zeros(1, z.shape[1], Hc // PATCH, Wc // PATCH, device=z.device, dtype=z.dtype)
    latent[:, :, t:t + z.shape[2], l:l + z.shape[3]] = z
    known = torch.zeros(Hc // PATCH, Wc // PATCH, dtype=torch.bool, device=z.device)
    known[t:t + z.shape[2], l:l + z.shape[3]] = True
    forced = forced_codes(pipe, latent, known, sched)
    return _run(pipe, labels, sched, forced, cfg, guidance, top_k, top_p, seed, eng)


@torch.no_grad()
def refine(pipe: Pipeline, image: torch.Tensor, labels, size: tuple[int, int], schedule: ScheduleLike | None = None,
           cfg: float = 2.5, guidance: str = "ramp", top_k: int = 900, top_p: float = 0.95,
           seed: int = 0, backend: str = "torch", engine_dir=None) -> GenerationOutput:
    """Continue a low-resolution image's schedule to `size` (H, W) pixels.

    Steps no larger than the input's token map are forced to the input's multi-scale codes; the
    input's own resolution is added to the schedule if it is missing; later steps are sampled.
    """
    img = _image(image)
    hi, wi = img.shape[0] // PATCH, img.shape[1] // PATCH
    Hc, Wc = _pixels(size, "refinement size")
    if Hc % PATCH or Wc % PATCH or Hc < img.shape[0] or Wc < img.shape[1] or (Hc, Wc) == tuple(img.shape[:2]):
        raise InputError(f"refinement size {Hc}x{Wc} must be a multiple of {PATCH} and larger than the "
                         f"{img.shape[0]}x{img.shape[1]} input")
    sched = final_schedule(schedule, (Hc, Wc))
    steps = [hw for hw in sched if hw[0] <= hi and hw[1] <= wi]
    if (hi, wi) not in steps:
        later = [hw for hw in sched if not (hw[0] <= hi and hw[1] <= wi)]
        if any(h < hi or w < wi for h, w in later[:1]):
            raise InputError(f"schedule {sched} cannot pass through the input's {hi}x{wi} tokens")
        sched = Schedule(tuple(steps) + ((hi, wi),) + tuple(later))
    _check(pipe, labels, sched, seed)
    eng = _engines(pipe, backend, engine_dir)
    z = _latent(pipe, img, eng)
    forced = []
    for hw in sched:
        if hw[0] <= hi and hw[1] <= wi:
            codes = pipe.vae.quantize.quantize(F.interpolate(z, size=hw, mode="area"))
            forced.append((codes, torch.ones(1, *hw, dtype=torch.bool, device=z.device)))
        else:
            forced.append((torch.zeros(1, *hw, dtype=torch.long, device=z.device),
                           torch.zeros(1, *hw, dtype=torch.bool, device=z.device)))
    return _run(pipe, labels, sched, forced, cfg, guidance, top_k, top_p, seed, eng)


def encoded_codes(pipe: Pipeline, image: torch.Tensor, schedule: Schedule) -> list[torch.Tensor]:
    """The input's multi-scale codes (1, h, w) per step: what forced tokens must equal."""
    return pipe.encode(_image(image)[None], schedule)


__all__ = ["inpaint", "expand", "refine", "final_schedule", "forced_codes", "encoded_codes", "to_uint8"]
