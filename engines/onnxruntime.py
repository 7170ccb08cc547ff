"""ONNX Runtime: the CPU execution provider, or CUDA with I/O binding onto torch tensors."""
from __future__ import annotations

import numpy as np
import torch

from flexvar.export.artifacts import ArtifactError

from .base import Engine

# I/O binding takes a numpy type or an ONNX element type number (numpy has no bfloat16: 16 is
# onnx.TensorProto.BFLOAT16)
_BIND = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64, torch.uint8: np.uint8,
         torch.bfloat16: 16}


class OrtEngine(Engine):
    backend = "onnxruntime"

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.session = None

    def load(self, path: str) -> "OrtEngine":
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ArtifactError("onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)")
            # TF32 off: a float32 graph computes in float32 (ORT enables TF32 matmuls by default)
            providers = [("CUDAExecutionProvider", {"device_id": self.device.index or 0, "use_tf32": "0"})]
        else:
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(path, opts, providers=providers)
        if self.device.type == "cuda" and "CUDAExecutionProvider" not in self.session.get_providers():
            raise ArtifactError(f"onnxruntime did not enable its CUDA execution provider for {path} "
                               f"(it runs with {self.session.get_providers()})")
        self.outputs = [o.name for o in self.session.get_outputs()]
        return self

    def run(self, feeds: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor] | None = None,
            stream=None) -> dict[str, torch.Tensor]:
        outputs = outputs or {}
        if self.device.type != "cuda":
            res = self.session.run(None, {k: v.detach().contiguous().numpy() for k, v in feeds.items()})
            out = {}
            for n, r in zip(self.outputs, res):
                t = torch.from_numpy(r)
                if n in outputs:
                    outputs[n].copy_(t)
                    t = outputs[n]
                out[n] = t
            return out
        # CUDA execution provider: bind torch's device memory (inputs and preallocated outputs)
        io = self.session.io_binding()
        dev = self.device.index or 0
        for k, v in feeds.items():
            v = v.contiguous()
            io.bind_input(k, "cuda", dev, _BIND[v.dtype], list(v.shape), v.data_ptr())
        for n in self.outputs:
            if n not in outputs:
                raise ValueError(f"onnxruntime on CUDA needs a preallocated output for {n!r}")
            t = outputs[n]
            if not t.is_contiguous():
                raise ValueError(f"output {n!r} must be contiguous")
            io.bind_output(n, "cuda", dev, _BIND[t.dtype], list(t.shape), t.data_ptr())
        io.synchronize_inputs()
        self.session.run_with_iobinding(io)
        io.synchronize_outputs()
        return dict(outputs)
