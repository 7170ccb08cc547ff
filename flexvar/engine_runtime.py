"""The step loop over an exported engine (onnxruntime, tensorrt): the runtime owns the KV cache,
prepares tokens and samples; the engine runs the transformer step and the decoder.

Token preparation and sampling are the reference runtime's, so in float32 an engine's greedy codes
equal the torch runtime's, and the same seed gives the same `torch.multinomial` stream.
"""
from __future__ import annotations

import os

import torch

from .kv_cache import KVCache
from .runtime import sample_step, step_tokens
from .sampling import SamplingParams
from .schedule import Schedule

BACKENDS = ("torch", "onnxruntime", "tensorrt", "aoti")


class EngineSet:
    """The opened engines of one artifact directory, checked against the pipeline's weights."""

    def __init__(self, model, vae, backend: str, engine_dir: str | os.PathLike, device: torch.device,
                 rebuild: bool = False, log=print, buckets=None, encoder: bool = True):
        """buckets: the scale buckets of AOTInductor packages (default: those the directory was exported
        with, else flexvar.export.BUCKETS). encoder=False: AOTInductor without the encoder package
        (generation only; image-to-image then needs a directory opened with it)."""
        from flexvar.engines import open_engine
        from flexvar.export import ArtifactError, export_onnx
        if backend == "onnxruntime" and torch.device(device).type == "cpu" and model.pos_1LC.dtype == torch.bfloat16:
            raise ArtifactError("onnxruntime's CPU provider cannot run bfloat16 graphs (it has no bfloat16 MatMul): "
                                "use float32 or float16 on the CPU, or bfloat16 on CUDA")
        if backend == "aoti":
            from flexvar.engines.aoti import AOTIEngine
            from flexvar.export.aoti import export_aoti
            from flexvar.export.graphs import DecoderGraph, EncoderGraph, TransformerStepGraph
            manifest = export_onnx(model, vae, engine_dir, rebuild=rebuild, log=log)
            if buckets is None and "aoti" in manifest:  # reuse the buckets this directory was exported with
                from flexvar.export.graphs import Bucket
                buckets = tuple(Bucket(n, e["min_tokens"], e["max_tokens"]) for n, e in manifest["aoti"]["buckets"].items())
            buckets = buckets or _buckets()
            paths = export_aoti(model, vae, engine_dir, manifest, buckets=buckets, rebuild=rebuild, log=log,
                                encoder=encoder)
            g, dg = TransformerStepGraph(model), DecoderGraph(vae)
            self.manifest = manifest
            self.step = AOTIEngine(device, g.input_names, g.output_names)
            for b in buckets:
                self.step.load(paths["transformer_step"][b.name], b.min_tokens, b.max_tokens)
            self.decoder = AOTIEngine(device, dg.input_names, dg.output_names).load(paths["decoder"])
            eg = EncoderGraph(vae)
            self.encoder = paths["encoder"] and AOTIEngine(device, eg.input_names, eg.output_names).load(paths["encoder"])
            return
        if backend == "tensorrt":
            from flexvar.engines.tensorrt import build_engines, built_buckets
            manifest = export_onnx(model, vae, engine_dir, rebuild=rebuild, log=log)
            buckets = buckets or built_buckets(manifest) or _buckets()  # as for AOTInductor: the exported ones
            paths = build_engines(engine_dir, manifest, rebuild=rebuild, log=log, buckets=buckets)
        else:
            manifest = export_onnx(model, vae, engine_dir, rebuild=rebuild, log=log)
            paths = {k: os.path.join(engine_dir, g["file"]) for k, g in manifest["graphs"].items()}
        self.manifest = manifest
        self.step = open_engine(backend, paths["transformer_step"], device)
        self.decoder = open_engine(backend, paths["decoder"], device)
        self.encoder = open_engine(backend, paths["encoder"], device)


def _buckets():
    from flexvar.export.graphs import BUCKETS
    return BUCKETS


@torch.no_grad()
def generate_codes(model, codebook, engines: EngineSet, labels_B: torch.Tensor, schedule: Schedule,
                   params: SamplingParams, generator: torch.Generator | None,
                   forced: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
                   on_logits=None) -> list[torch.Tensor]:
    """Codes (B, h, w) of every step, the transformer step run by the engine; `forced` as in
    `runtime.generate_codes` (per step (codes, keep): kept codes replace the sampled ones).
    `on_logits(si, logits_2BlV)`, where given, sees each step's [cond; uncond] logits before sampling
    (with every code forced, this is teacher forcing: `bench/precision.py`)."""
    cfg = model.cfg
    B = labels_B.shape[0]
    dev, dt = labels_B.device, model.pos_1LC.dtype
    labels_2B = torch.cat([labels_B, torch.full_like(labels_B, cfg.null_class)])
    cond, blocks, head = model.modulation(labels_2B)
    cache = KVCache(cfg.depth, schedule.total_tokens, 2 * B, cfg.heads, cfg.head_dim, dt, dev)
    codes: list[torch.Tensor] = []
    for si, hw in enumerate(schedule):
        if si == 0:
            x = step_tokens(model, codebook, cond, None, hw)
        else:
            x = step_tokens(model, codebook, cond, codes[-1], hw).repeat(2, 1, 1)
        start, l = schedule.offsets[si], hw[0] * hw[1]
        feeds = {"x": x.float(), "blocks": blocks, "head": head}
        outputs = {"logits": torch.empty(2 * B, l, cfg.vocab_size, device=dev)}
        for i in range(cfg.depth):
            feeds[f"past_k_{i}"], feeds[f"past_v_{i}"] = cache.keys(i, start), cache.values(i, start)
            outputs[f"k_{i}"] = cache.kv[i, 0, start:start + l]
            outputs[f"v_{i}"] = cache.kv[i, 1, start:start + l]
        logits = engines.step.run(feeds, outputs)["logits"]
        if on_logits is not None:
            on_logits(si, logits)
        codes.append(sample_step(logits, si, schedule, params, generator, forced))
    return codes


@torch.no_grad()
def encode_latent(engines: EngineSet, images_BHW3: torch.Tensor) -> torch.Tensor:
    """Latents z (B, Cvae, H/16, W/16) of uint8 images from the encoder engine."""
    if engines.encoder is None:
        from flexvar.export import ArtifactError
        raise ArtifactError("these engines were opened without the encoder (encoder=False): image-to-image needs it")
    return engines.encoder.run({"image": images_BHW3.contiguous()})["latent"]


@torch.no_grad()
def decode(engines: EngineSet, codes_Bhw: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 16h, 16w, 3) images from the decoder engine."""
    B, h, w = codes_Bhw.shape
    out = torch.empty(B, 16 * h, 16 * w, 3, dtype=torch.uint8, device=codes_Bhw.device)
    return engines.decoder.run({"codes": codes_Bhw.contiguous()}, {"image": out})["image"]
