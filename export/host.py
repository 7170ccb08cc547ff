"""Assets for the C++ host (host/): the tensors it needs besides the AOTInductor packages, as raw
little-endian float32 files, and `host.txt`, a line-based manifest it can read without a JSON parser:

    fingerprint <fp>            precision <p>          depth/width/heads/vocab/classes/code_dim <n>
    tensor <name> <d0>x<d1>...  (file host/<name>.f32)
    step <bucket> <min_tokens> <max_tokens> <package file>
    decoder <package file>

Written to temporary names and moved into place, host.txt last.
"""
from __future__ import annotations

from pathlib import Path

import torch

from flexvar.files import write_bytes, write_text


def host_tensors(model, vae) -> dict[str, torch.Tensor]:
    """Everything the host computes with outside the packages (float32, CPU)."""
    with torch.no_grad():
        t = {
            "class_emb": model.class_emb.weight,
            "ada_w": torch.stack([b.ada_lin[1].weight for b in model.blocks]),
            "ada_b": torch.stack([b.ada_lin[1].bias for b in model.blocks]),
            "head_ada_w": model.head_nm.ada_lin[1].weight,
            "head_ada_b": model.head_nm.ada_lin[1].bias,
            "pos_1LC": model.pos_1LC,
            "pos_start": model.pos_start,
            "codebook": vae.quantize.normalized(),
            "word_w": model.word_embed.weight,
            "word_b": model.word_embed.bias,
        }
        return {k: v.detach().float().cpu().contiguous() for k, v in t.items()}


def write_host_assets(model, vae, engine_dir, manifest: dict, aoti: dict) -> None:
    d = Path(engine_dir)
    (d / "host").mkdir(exist_ok=True)
    c = manifest["model_config"]
    lines = [f"fingerprint {manifest['fingerprint']}", f"precision {manifest['precision']}",
             f"device {aoti['device']}"]
    lines += [f"{k} {c[v]}" for k, v in (("depth", "depth"), ("width", "width"), ("heads", "heads"),
                                         ("vocab", "vocab_size"), ("classes", "num_classes"), ("code_dim", "code_dim"))]
    for name, t in host_tensors(model, vae).items():
        path = d / "host" / f"{name}.f32"
        write_bytes(path, t.numpy().astype("<f4").tobytes())
        lines.append(f"tensor {name} {'x'.join(str(s) for s in t.shape)}")
    for b, e in aoti["buckets"].items():
        lines.append(f"step {b} {e['min_tokens']} {e['max_tokens']} {e['file']}")
    lines.append(f"decoder {aoti['decoder']}")
    write_text(d / "host.txt", "\n".join(lines) + "\n")
