"""TensorRT engines built from the exported ONNX files: one optimization profile per scale bucket.

Written against TensorRT 10's Python API (Builder, OnnxParser, IOptimizationProfile,
IExecutionContext.execute_async_v3). TensorRT cannot be installed in this project's workplace, so
the build and run paths were not executed here; the profiles, builder settings and engine naming
are computed without TensorRT and tested in CI.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from flexvar.export.artifacts import ArtifactError
from flexvar.files import write_bytes, write_text
from flexvar.export.graphs import BUCKETS, Bucket, DecoderGraph, EncoderGraph, step_profile

from .base import Engine

WORKSPACE_BYTES = 8 << 30


def _trt():
    try:
        import tensorrt as trt
    except ImportError:
        raise ArtifactError("TensorRT is not installed: the tensorrt backend needs the `tensorrt` package "
                            "(CUDA machine); use --backend onnxruntime here") from None
    return trt


def step_profiles(manifest: dict, buckets: tuple[Bucket, ...] = BUCKETS) -> list[dict[str, tuple]]:
    """One optimization profile per bucket, from the graph contract (export/graphs.py)."""
    return [step_profile(manifest["model_config"], b) for b in buckets]


def builder_settings(precision: str) -> dict:
    """What the builder configuration sets for a precision (flags by name, workspace bytes)."""
    flags = {"float32": [], "float16": ["FP16"], "bfloat16": ["BF16"]}
    if precision not in flags:
        raise ArtifactError(f"TensorRT build: unsupported precision {precision!r}")
    return {"flags": flags[precision], "workspace_bytes": WORKSPACE_BYTES}


def plan_name(graph: str, manifest: dict, trt_version: str, sm: str,
              buckets: tuple[Bucket, ...] = BUCKETS) -> str:
    """Engine file name: graph, weights fingerprint, precision, the step's buckets (one profile each), TensorRT
    version, GPU arch."""
    tag = "-".join(b.name for b in buckets) if graph == "transformer_step" else graph[:3]
    return f"{graph}-{manifest['fingerprint']}-{manifest['precision']}-{tag}-trt{trt_version}-{sm}.plan"


def build_engines(engine_dir, manifest: dict, rebuild: bool = False, log=print,
                  buckets: tuple[Bucket, ...] = BUCKETS) -> dict[str, str]:
    """Build (or reuse) the TensorRT plans of the transformer step (one optimization profile per bucket) and of the
    tokenizer graphs; returns their paths."""
    trt = _trt()
    if not torch.cuda.is_available():
        raise ArtifactError("TensorRT engines need a CUDA GPU")
    major, minor = torch.cuda.get_device_capability()
    sm = f"sm{major}{minor}"
    paths = {}
    for graph, profiles in (("transformer_step", step_profiles(manifest, buckets)),
                            ("decoder", [DecoderGraph.profile()]),
                            ("encoder", [EncoderGraph.profile()])):
        path = Path(engine_dir) / plan_name(graph, manifest, trt.__version__, sm, buckets)
        paths[graph] = str(path)
        if path.exists() and not rebuild:
            continue
        onnx_path = Path(engine_dir) / manifest["graphs"][graph]["file"]
        log(f"export: building TensorRT {graph} ({len(profiles)} profiles) -> {path}")
        data = _build(trt, onnx_path, profiles, builder_settings(manifest["precision"]))
        # the profiles first: a plan on disk always has its profiles beside it
        write_text(path.with_suffix(".json"), json.dumps({"profiles": [{k: [list(s) for s in v] for k, v in p.items()}
                                                                       for p in profiles]}))
        write_bytes(path, data)
    record_buckets(engine_dir, buckets)
    return paths


def record_buckets(engine_dir, buckets: tuple[Bucket, ...]) -> None:
    """The step's buckets into the directory's manifest ("tensorrt"), so that later runs open the plans built for
    them (`built_buckets`) rather than build others for the default ones."""
    from flexvar.export.artifacts import MANIFEST
    path = Path(engine_dir) / MANIFEST
    m = json.loads(path.read_text())
    m["tensorrt"] = {"buckets": {b.name: {"min_tokens": b.min_tokens, "max_tokens": b.max_tokens} for b in buckets}}
    write_text(path, json.dumps(m, indent=1))


def built_buckets(manifest: dict) -> tuple[Bucket, ...] | None:
    """The buckets the directory's TensorRT plans were built for (`record_buckets`), if any."""
    if "tensorrt" not in manifest:
        return None
    return tuple(Bucket(n, e["min_tokens"], e["max_tokens"]) for n, e in manifest["tensorrt"]["buckets"].items())


def _build(trt, onnx_path: Path, profiles: list[dict], settings: dict) -> bytes:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ArtifactError(f"TensorRT could not parse {onnx_path}: {errs[:300]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings["workspace_bytes"])
    for flag in settings["flags"]:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for p in profiles:
        prof = builder.create_optimization_profile()
        for name, (lo, opt, hi) in p.items():
            prof.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(prof)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ArtifactError(f"TensorRT build of {onnx_path} failed")
    return bytes(plan)


class TensorRTEngine(Engine):
    """A deserialized plan; one execution context per optimization profile (bucket)."""

    backend = "tensorrt"

    def __init__(self, device: torch.device):
        self.device = torch.device(device)

    def load(self, path: str) -> "TensorRTEngine":
        trt = _trt()
        self.trt = trt
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if self.engine is None:
            raise ArtifactError(f"{path}: not a TensorRT plan for this TensorRT version/GPU (stale engine)")
        meta = json.loads(Path(path).with_suffix(".json").read_text())
        self.profiles = meta["profiles"]
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.contexts = {}
        return self

    def _profile_for(self, feeds) -> int:
        for i, p in enumerate(self.profiles):
            if all(all(lo <= s <= hi for s, lo, hi in zip(feeds[n].shape, p[n][0], p[n][2])) for n in p if n in feeds):
                return i
        raise ArtifactError("no optimization profile of the engine covers these shapes")

    def run(self, feeds, outputs=None, stream=None):
        if outputs is None or any(n not in outputs for n in self.outputs):
            raise ValueError("the tensorrt backend needs preallocated outputs for every output")
        stream = stream or torch.cuda.current_stream(self.device)
        idx = self._profile_for(feeds)
        if idx not in self.contexts:
            ctx = self.engine.create_execution_context()
            ctx.set_optimization_profile_async(idx, stream.cuda_stream)
            self.contexts[idx] = ctx
        ctx = self.contexts[idx]
        for n in self.inputs:
            t = feeds[n].contiguous()
            feeds[n] = t
            ctx.set_input_shape(n, tuple(t.shape))
            ctx.set_tensor_address(n, t.data_ptr())
        for n in self.outputs:
            ctx.set_tensor_address(n, outputs[n].data_ptr())
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        return dict(outputs)
