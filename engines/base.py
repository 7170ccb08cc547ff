"""One Engine interface for every backend: load, allocate, run(feeds, stream)."""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class Engine(ABC):
    """A compiled graph of one backend. Feeds and results are torch tensors keyed by the graph's names."""

    backend = "?"

    @abstractmethod
    def load(self, path: str) -> "Engine":
        """Open the artifact at `path`."""

    def allocate(self, **max_shapes) -> None:
        """Reserve buffers for the largest shapes to come (no-op where the backend allocates itself)."""

    @abstractmethod
    def run(self, feeds: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor] | None = None,
            stream=None) -> dict[str, torch.Tensor]:
        """Run the graph on `feeds`. `outputs`, where given, are preallocated tensors the results are
        written into (on GPU backends without a copy, e.g. straight into KV-cache slices);
        `stream` is a CUDA stream for GPU backends. Returns every output by name."""


def open_engine(backend: str, path: str, device: torch.device) -> Engine:
    """The engine of one artifact file. A file the backend cannot load (corrupt, or for another runtime) is an
    ArtifactError that says so; so is a backend that cannot run on `device` here."""
    from flexvar.errors import first_line
    from flexvar.export.artifacts import ArtifactError
    if backend == "onnxruntime":
        from .onnxruntime import OrtEngine
        engine = OrtEngine(device)
    elif backend == "tensorrt":
        from .tensorrt import TensorRTEngine
        engine = TensorRTEngine(device)
    else:
        raise ValueError(f"unknown backend {backend!r}")
    try:
        return engine.load(path)
    except ArtifactError:
        raise
    except Exception as e:  # noqa: BLE001 - the backend's own error, named in one line
        raise ArtifactError(f"{path}: {backend} cannot load it ({type(e).__name__}: {first_line(e)}); if the file is "
                            f"damaged, delete it and run again with --rebuild") from e
