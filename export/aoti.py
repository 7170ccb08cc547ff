"""AOTInductor packages (.pt2) of the transformer step, one per scale bucket, and of the decoder.

Each step package is compiled for token counts inside its bucket (torch.export dynamic dims), any
batch up to MAX_BATCH rows and any past up to MAX_PAST tokens (0 included); they load from Python
(`torch._inductor.aoti_load_package`) and from C++ (`torch::inductor::AOTIModelPackageLoader`).
Names carry the weights' fingerprint, precision, bucket, torch version and device; the manifest
lists them, rewritten atomically.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch.export import Dim, export

from flexvar.files import replaced, write_text

from .artifacts import MANIFEST
from .graphs import BUCKETS, MAX_BATCH, MAX_PAST, Bucket, DecoderGraph, EncoderGraph, TransformerStepGraph


def _step_dynamic_shapes(depth: int, bucket: Bucket) -> dict:
    batch = Dim("batch", min=2, max=MAX_BATCH)
    tokens = Dim(f"tokens_{bucket.name}", min=bucket.min_tokens, max=bucket.max_tokens)
    past = Dim("past", min=0, max=MAX_PAST)
    return {"x": {0: batch, 1: tokens}, "blocks": {1: batch}, "head": {0: batch},
            "past": tuple({0: past, 1: batch} for _ in range(2 * depth))}


def _compile(ep, path: Path) -> None:
    with replaced(path, ".tmp.pt2") as tmp:  # the packager wants the .pt2 ending
        torch._inductor.aoti_compile_and_package(ep, package_path=str(tmp))


def export_aoti(model, vae, engine_dir, manifest: dict, buckets: tuple[Bucket, ...] = BUCKETS,
                rebuild: bool = False, log=print, encoder: bool = True) -> dict:
    """Compile (or reuse) the packages; returns {"transformer_step": {bucket: path}, "decoder": path,
    "encoder": path or None}. encoder=False skips the encoder (generation alone, e.g. the C++ host)."""
    d = Path(engine_dir)
    dev = model.pos_1LC.device.type
    tag = f"{manifest['fingerprint']}-{manifest['precision']}"
    tv = torch.__version__.split("+")[0]
    step = TransformerStepGraph(model)
    out = {"transformer_step": {}, "decoder": None, "encoder": None}
    entries = {"device": dev, "torch": tv, "buckets": {}, "decoder": None, "encoder": None}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b in buckets:
            path = d / f"transformer_step-{tag}-{b.name}-torch{tv}-{dev}.pt2"
            if rebuild or not path.exists():
                log(f"export: AOTInductor transformer_step, tokens {b.min_tokens}-{b.max_tokens} -> {path}")
                sample = step.sample_inputs(batch=2, tokens=min(max(b.min_tokens, 2), b.max_tokens), past=5)
                ep = export(step.module(), sample, dynamic_shapes=_step_dynamic_shapes(model.cfg.depth, b))
                _compile(ep, path)
            out["transformer_step"][b.name] = str(path)
            entries["buckets"][b.name] = {"file": path.name, "min_tokens": b.min_tokens, "max_tokens": b.max_tokens}
        dec = DecoderGraph(vae)
        path = d / f"decoder-{tag}-torch{tv}-{dev}.pt2"
        if rebuild or not path.exists():
            log(f"export: AOTInductor decoder -> {path}")
            ds = {"codes": {0: Dim("batch", min=1, max=64), 1: Dim("h", min=2, max=64), 2: Dim("w", min=2, max=64)}}
            ep = export(dec.module(), dec.sample_inputs(batch=2, h=3, w=4), dynamic_shapes=ds)
            _compile(ep, path)
        out["decoder"] = str(path)
        entries["decoder"] = path.name
        enc = EncoderGraph(vae)
        path = d / f"encoder-{tag}-torch{tv}-{dev}.pt2"
        if not encoder and not path.exists():
            path = None
        elif rebuild or not path.exists():
            log(f"export: AOTInductor encoder -> {path}")
            ds = {"image": {0: Dim("batch", min=1, max=64), 1: 16 * Dim("th", min=2, max=64),
                            2: 16 * Dim("tw", min=2, max=64)}}
            ep = export(enc.module(), enc.sample_inputs(batch=2, h=3, w=4), dynamic_shapes=ds)
            _compile(ep, path)
        out["encoder"] = path and str(path)
        entries["encoder"] = path and path.name
    m = json.loads((d / MANIFEST).read_text())
    m["aoti"] = entries
    from .host import write_host_assets
    write_host_assets(model, vae, d, m, entries)
    write_text(d / MANIFEST, json.dumps(m, indent=1))
    return out
