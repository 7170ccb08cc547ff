"""The artifact cache: ONNX files and a manifest, named by what they depend on.

    engine_dir/
      manifest.json                         fingerprint, precision, configs, buckets, tools, graphs
      transformer_step-<fp>-<precision>-opset<N>.onnx
      decoder-<fp>-<precision>-opset<N>.onnx, encoder-<fp>-<precision>-opset<N>.onnx

A directory whose manifest names other weights, another precision or other tool versions is
refused (or, with rebuild=True, rebuilt); files are written to temporary names and moved into
place, the manifest last, so an interrupted export leaves no usable-looking half.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import warnings
from pathlib import Path

import torch

from flexvar.errors import FlexVARError
from flexvar.files import replaced, write_text

from .graphs import BUCKETS, MAX_BATCH, MAX_PAST, DecoderGraph, EncoderGraph, TransformerStepGraph

MANIFEST = "manifest.json"
FORMAT = 2  # 2: bf16 exports keep the tokenizer graphs in float32 ("tokenizer_precision")


class ArtifactError(FlexVARError):
    """A missing, incomplete, stale or foreign artifact directory."""


def weights_fingerprint(*modules: torch.nn.Module) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes (16 hex digits)."""
    h = hashlib.sha256()
    for m in modules:
        for name, t in m.state_dict().items():
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            # memory format does not matter: hash the values in row-major order
            flat = t.detach().cpu().clone(memory_format=torch.contiguous_format).reshape(-1)
            h.update(flat.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def tool_versions() -> dict:
    import onnx
    return {"torch": torch.__version__.split("+")[0], "onnx": onnx.__version__}


def _precision(dtype: torch.dtype) -> str:
    return {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}[dtype]


def load_manifest(engine_dir: str | os.PathLike) -> dict:
    p = Path(engine_dir) / MANIFEST
    if not p.is_file():
        raise ArtifactError(f"{engine_dir}: no {MANIFEST}: not an artifact directory (run flexvar export)")
    try:
        m = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{p}: unreadable manifest ({type(e).__name__})") from None
    if m.get("format") != FORMAT:
        raise ArtifactError(f"{p}: manifest format {m.get('format')} is not {FORMAT} (written by another version of "
                            "flexvar-deploy); rebuild it (--rebuild)")
    for g in m.get("graphs", {}).values():
        if not (Path(engine_dir) / g["file"]).is_file():
            raise ArtifactError(f"{engine_dir}: incomplete: {g['file']} is missing")
    return m


def check_manifest(m: dict, fingerprint: str, precision: str, engine_dir) -> None:
    """Refuse artifacts built for other weights, another precision or other tool versions, and ONNX files whose
    size is not the one exported (a truncated copy)."""
    if m.get("fingerprint") != fingerprint:
        raise ArtifactError(f"{engine_dir}: built for other weights (fingerprint {m.get('fingerprint')}, "
                            f"these weights {fingerprint}); rebuild it or use another directory")
    if m.get("precision") != precision:
        raise ArtifactError(f"{engine_dir}: built in {m.get('precision')}, requested {precision}")
    if m.get("tools") != tool_versions():
        raise ArtifactError(f"{engine_dir}: built with {m.get('tools')}, this environment has {tool_versions()}")
    for g in m.get("graphs", {}).values():  # sizes recorded since session 26's exports; older ones unchecked
        path = Path(engine_dir) / g["file"]
        if "bytes" in g and path.stat().st_size != g["bytes"]:
            raise ArtifactError(f"{path}: {path.stat().st_size} bytes, exported as {g['bytes']} (truncated or "
                                f"replaced); --rebuild re-exports it")


def _export_one(graph, path: Path, opset: int) -> None:
    import onnx
    with replaced(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph.module(), graph.sample_inputs(), str(tmp), input_names=list(graph.input_names),
                          output_names=list(graph.output_names), dynamic_axes=graph.dynamic_axes,
                          opset_version=opset, dynamo=False, do_constant_folding=True)
        onnx.checker.check_model(str(tmp), full_check=True)  # with type inference: e.g. no bf16 Conv


def export_onnx(model, vae, engine_dir: str | os.PathLike, opset: int = 17, rebuild: bool = False,
                log=print) -> dict:
    """ONNX files of the transformer step and the decoder, with their manifest; cached.

    Returns the manifest. An existing directory for the same weights, precision and tools is reused;
    one for others is refused unless rebuild=True.
    """
    d = Path(engine_dir)
    fp = weights_fingerprint(model, vae)
    precision = _precision(model.pos_1LC.dtype)
    if (d / MANIFEST).exists():
        try:
            m = load_manifest(d)
            check_manifest(m, fp, precision, d)
            return m
        except ArtifactError:
            if not rebuild:
                raise
            log(f"export: rebuilding {d}")
            for pattern in ("*.onnx", "*.pt2", "*.plan"):  # every artifact this tool writes
                for f in d.glob(pattern):
                    f.unlink()
                    if f.suffix == ".plan":
                        f.with_suffix(".json").unlink(missing_ok=True)
            (d / MANIFEST).unlink()
    d.mkdir(parents=True, exist_ok=True)
    graphs = {}
    # ONNX Conv has no bfloat16 before opset 22 (onnxruntime refuses such a model): a bf16 export keeps
    # the tokenizer graphs in float32. Their interfaces (int64 codes -> uint8 image, uint8 image ->
    # latent, which callers take as float32) do not change.
    tok = copy.deepcopy(vae).float() if precision == "bfloat16" else vae
    for g in (TransformerStepGraph(model), DecoderGraph(tok), EncoderGraph(tok)):
        name = f"{g.name}-{fp}-{precision}-opset{opset}.onnx"
        log(f"export: {g.name} -> {d / name}")
        _export_one(g, d / name, opset)
        graphs[g.name] = {"file": name, "bytes": (d / name).stat().st_size,
                          "inputs": list(g.input_names), "outputs": list(g.output_names),
                          "dynamic_axes": {k: {str(a): n for a, n in v.items()} for k, v in g.dynamic_axes.items()}}
    step = TransformerStepGraph(model)
    m = {"format": FORMAT, "fingerprint": fp, "precision": precision, "opset": opset, "tools": tool_versions(),
         "tokenizer_precision": _precision(next(tok.parameters()).dtype),
         "model_config": model.cfg.to_dict(), "tokenizer_config": vae.cfg.to_dict(),
         "limits": {"max_batch_rows": MAX_BATCH, "max_past_tokens": MAX_PAST},
         "buckets": [{"name": b.name, "min_tokens": b.min_tokens, "max_tokens": b.max_tokens,
                      "profile": {k: [list(s) for s in v] for k, v in step.profile(b).items()
                                  if k in ("x", "past_k_0")}} for b in BUCKETS],
         "graphs": graphs}
    write_text(d / MANIFEST, json.dumps(m, indent=1))
    return m
