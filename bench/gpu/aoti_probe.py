"""Export the tiny preset's AOTInductor packages on CUDA and load them one by one, with faulthandler
on, to locate a crash (a segfault seen once in a long GPU process).

    python -X faulthandler bench/gpu/aoti_probe.py DIR
"""
import faulthandler
import sys

import torch

from flexvar import Pipeline
from flexvar.export import export_onnx
from flexvar.export.aoti import export_aoti
from flexvar.export.graphs import make_buckets

faulthandler.enable()
pipe = Pipeline.from_random(device="cuda", dtype=torch.float32)
m = export_onnx(pipe.model, pipe.vae, sys.argv[1], log=print)
paths = export_aoti(pipe.model, pipe.vae, sys.argv[1], m, buckets=make_buckets((64, 4096)), log=print)
for p in [*paths["transformer_step"].values(), paths["decoder"], paths["encoder"]]:
    print("load", p, flush=True)
    torch._inductor.aoti_load_package(p)
    print("loaded", flush=True)
print("aoti probe: all packages loaded")
