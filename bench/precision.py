"""Agreement of the bf16/fp16 fast runtime and exported engines with float32 (random weights, greedy).

    python -m flexvar.bench.precision [--depth d16] [--schedule 256-10] [--batch 8]
        [--backends fast,onnxruntime,aoti] [--engine-dir DIR]

`--dtypes bf16w,fp16w`: float32 with every weight rounded to bf16 / fp16 first, the agreement that
the weights' rounding alone allows; `bf16w-noada` leaves the modulation weights (class embedding and
every ada_lin, used once per label set) in float32, `bf16w-linears` rounds only the blocks' four GEMM
weights (qkv, proj, fc1, fc2): the ceiling of any runtime whose block GEMMs read bf16 weights.

one-step code agreement: with the float32 run's codes as the prefix, the fraction of tokens whose
greedy (guided) code in low precision equals float32's; reported for step 1 of each schedule step
and over all steps, and by the float32 margin: among the tokens whose float32 guided logits put the
largest at least m nats above the second largest (m in `MARGINS`), the share of all tokens and their
agreement. Random weights give near-flat logits, so many tokens are near-ties that any rounding may
flip; the margin rows say how much of the disagreement is that. PSNR: free-running greedy images of
the low-precision fast runtime against the float32 reference images. The float32 reference is the
torch reference runtime. Engines (onnxruntime's CUDA execution provider, AOTInductor) are exported per
precision under `--engine-dir`/<model>-<precision> (reused when present: `flexvar bench --engine-dir`
shares them) and run in bf16 and fp16; their token preparation and sampling are the reference's (`engine_runtime`).

`--step1-labels N` (default every class, 1,000, on CUDA; 0 on CPU): step-1 code agreement over many
labels, since a batch of 8 gives step 1 only 8 tokens at 256-10: the greedy guided first-step codes of
the first N classes (each with its null-class pair, the schedule's step-1 guidance), low precision
against float32, overall and by the float32 margin; fast runtime rows only (for the engines, the
batch's step 1 above). Its float32 side is the float32 fast runtime, whose logits are the reference's
to ~1e-5 (as for the margins).
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import shlex
import sys

import torch

from flexvar import Pipeline, engine_runtime
from flexvar.bench.steps_latency import engine_subdir
from flexvar.config import FlexVARConfig, VQVAEConfig
from flexvar.export.graphs import make_buckets
from flexvar.fast import guidance_coefficients
from flexvar.random_weights import random_tokenizer, random_transformer
from flexvar.sampling import SamplingParams, guidance_weight, guide
from flexvar.schedule import Schedule


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.float() - b.float()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(255 ** 2 / mse)


@torch.no_grad()
def fast_teacher_forced(rt, labels, codes, sched, p: SamplingParams = SamplingParams(), steps: int | None = None):
    """Guided logits (B, l, V) of every step (or of the first `steps`, with a cache of their tokens only) through
    the fast runtime's own step (`guided_logits`, what its generation samples), given codes."""
    from flexvar.kv_cache import KVCache
    cfg, B = rt.model.cfg, len(labels)
    n = len(sched) if steps is None else steps
    labels_2B, cond, blocks, head = rt.label_set(tuple(labels) + (cfg.null_class,) * B)
    cache = KVCache(cfg.depth, sched.offsets[n], 2 * B, cfg.heads, cfg.head_dim, rt.dtype, rt.device)
    coef = guidance_coefficients(sched, p).to(rt.device)
    out = []
    for si, hw in enumerate(sched.steps[:n]):
        logits = None
        if si == 0:  # the first-step table where the runtime has one (and its float32 logits, if it keeps them)
            table = rt.first_step(hw)
            logits = rt.first_step_logits(table, labels_2B, coef[0])
            x = rt.first_step_rows(table, hw, labels_2B, cond, blocks, cache.kv, rows=logits is None)
        else:
            x = rt.transformer(rt.next_tokens(codes[si - 1], hw).float().repeat(2, 1, 1), blocks, cache.kv,
                               sched.offsets[si])
        out.append(rt.guided_logits(x, head, coef[si]) if logits is None else logits)
    return out


MARGINS = (0.0, 0.01, 0.1, 0.5, 1.0)  # nats between the float32 logits' largest and second largest


def reference_margins(rt, labels, sched, p, ref) -> list[torch.Tensor]:
    """Per step (B, h, w): the float32 guided logits' largest minus second largest, teacher-forced on the float32
    reference's codes. rt: the float32 pipeline's fast runtime (its logits are the reference's to ~1e-5)."""
    logits = fast_teacher_forced(rt, labels, [c.to(rt.device) for c in ref.codes], sched, p)
    out = []
    for si, lg in enumerate(logits):
        top = lg.float().topk(2, dim=-1).values
        out.append((top[..., 0] - top[..., 1]).view(-1, *sched.steps[si]).cpu())
    return out


def step1_logits(rt, labels, sched, p: SamplingParams, chunk: int = 250) -> torch.Tensor:
    """Guided float32 logits (N, h*w, V) of the first step of `sched` for each label with its null-class pair
    (`fast_teacher_forced`'s first step), `chunk` labels at a time; on the CPU."""
    return torch.cat([fast_teacher_forced(rt, labels[a:a + chunk], [], sched, p, steps=1)[0].float().cpu()
                      for a in range(0, len(labels), chunk)])


def step1_reference(rt, labels, sched, p) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(greedy codes, float32 margins) of the first step for `labels` through the float32 runtime rt; None
    without labels."""
    if not labels:
        return None
    logits = step1_logits(rt, labels, sched, p)
    top = logits.topk(2, dim=-1)
    return top.indices[..., 0], top.values[..., 0] - top.values[..., 1]


def step1_row(rt, labels, sched, p, step1_ref) -> dict:
    """Step-1 agreement over `labels` of runtime rt with `step1_reference`."""
    codes, margins = step1_ref
    equal = step1_logits(rt, labels, sched, p).argmax(-1) == codes
    return {"labels": len(labels), "tokens": equal.numel(), "agreement": round(equal.float().mean().item(), 4),
            "by_fp32_margin": margin_agreement([equal], [margins])}


def margin_agreement(equal: list[torch.Tensor], margins: list[torch.Tensor], thresholds=MARGINS) -> list[dict]:
    """For each threshold m: the share of all tokens whose float32 margin is >= m and the agreement among them
    (None where no token is). equal, margins: per step, the same shapes."""
    eq = torch.cat([e.reshape(-1).cpu() for e in equal])
    mg = torch.cat([m.reshape(-1).cpu() for m in margins])
    rows = []
    for m in thresholds:
        keep = mg >= m
        n = int(keep.sum())
        rows.append({"min_margin": m, "share_of_tokens": round(n / eq.numel(), 4),
                     "agreement": round(eq[keep].float().mean().item(), 4) if n else None})
    return rows


def _greedy(si, sched, p, logits):
    hw = sched.steps[si]
    return guide(logits, guidance_weight(si, len(sched), hw, p), p.guidance).argmax(-1).view(-1, *hw)


def _row(backend, name, equal, margins, sched, codes, images, ref) -> dict:
    """equal: per step, whether each token's low-precision greedy code is float32's (teacher-forced)."""
    agree = [e.float().mean().item() for e in equal]
    n = [h * w for h, w in sched]
    return {"backend": backend, "dtype": name, "one_step_agreement_per_step": [round(a, 4) for a in agree],
            "one_step_agreement_all": round(sum(a * k for a, k in zip(agree, n)) / sum(n), 4),
            "one_step_agreement_by_fp32_margin": margin_agreement(equal, margins),
            "free_running_final_code_agreement": round((codes[-1].cpu() == ref.codes[-1]).float().mean().item(), 4),
            "psnr_db_vs_fp32_reference": round(psnr(images.cpu(), ref.images), 2)}


ROUNDED = {  # which transformer parameters a `--dtypes` name ending in "w" (or "w-PART") rounds
    "": lambda name: True,
    "noada": lambda name: "ada_lin" not in name and not name.startswith("class_emb"),
    "linears": lambda name: name.startswith("blocks.") and name.endswith(
        ("mat_qkv.weight", "proj.weight", "fc1.weight", "fc2.weight")),
}


def fast_row(model, vae, dt, name, labels, sched, p, ref, margins, dev, round_to=None, rounded: str = "",
             step1_labels=(), step1_ref=None) -> dict:
    """round_to: compute in float32 (dt) with weights first rounded to this dtype: what the weights'
    rounding alone costs, the ceiling of any runtime that stores them in that dtype. rounded: which
    transformer weights (`ROUNDED`); the tokenizer's are rounded with all of them only. step1_labels,
    step1_ref (`step1_reference`): the step-1 agreement over those labels, where given."""
    m, v = copy.deepcopy(model), copy.deepcopy(vae)
    if round_to is not None:
        with torch.no_grad():
            for n, prm in m.named_parameters():
                if ROUNDED[rounded](n):
                    prm.copy_(prm.to(round_to).float())
        if not rounded:
            v = v.to(round_to).float()
    pipe = Pipeline(m, v, device=dev, dtype=dt, fast_options={"first_step_table": True})  # as on CUDA, also on CPU
    codes = [c.to(dev) for c in ref.codes]
    logits = fast_teacher_forced(pipe.fast_runtime, labels, codes, sched, p)
    equal = [lg.argmax(-1).view(-1, *sched.steps[si]) == codes[si] for si, lg in enumerate(logits)]
    fast = pipe.generate(labels, sched, cfg=2.5, top_k=1, top_p=0.0)
    row = _row("fast", name, equal, margins, sched, fast.codes, fast.images, ref)
    if step1_ref is not None:
        row["step1_agreement_over_labels"] = step1_row(pipe.fast_runtime, list(step1_labels), sched, p, step1_ref)
    return row


def engine_row(backend, model, vae, dt, name, labels, sched, p, ref, margins, dev, engine_dir, depth) -> dict:
    """Teacher-forced agreement (every code forced to float32's, the engine's logits seen before
    sampling) and a free-running greedy generation of an exported engine in `dt`."""
    m, v = copy.deepcopy(model).to(dt), copy.deepcopy(vae).to(dt)
    eng = engine_runtime.EngineSet(m, v, backend, engine_subdir(engine_dir, depth, dt), dev,
                                   log=lambda *a: None, buckets=make_buckets((4096,)), encoder=False)
    lab = torch.tensor(labels, device=dev)
    codes = [c.to(dev) for c in ref.codes]
    equal = []
    engine_runtime.generate_codes(
        m, v.quantize, eng, lab, sched, p, torch.Generator(dev).manual_seed(0),
        forced=[(c, torch.ones_like(c, dtype=torch.bool)) for c in codes],
        on_logits=lambda si, lg: equal.append(_greedy(si, sched, p, lg.float()) == codes[si]))
    free = engine_runtime.generate_codes(m, v.quantize, eng, lab, sched, p, torch.Generator(dev).manual_seed(0))
    images = engine_runtime.decode(eng, free[-1])
    return _row(backend, name, equal, margins, sched, free, images, ref)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", default="d16")
    ap.add_argument("--tokenizer", default="vq16")
    ap.add_argument("--schedule", default="256-10")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--backends", default="fast", help="comma list of fast, onnxruntime, aoti")
    ap.add_argument("--dtypes", default="bf16,fp16,fp32",
                    help="precisions of the fast runtime; bf16w / fp16w: float32 with the weights rounded to bf16 / "
                         "fp16 (bf16w-noada, bf16w-linears: some of them, see above)")
    ap.add_argument("--engine-dtypes", default="bf16,fp16", help="precisions of the engines")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--engine-dir", default=None, help="exported engines per precision (default: a temporary dir)")
    ap.add_argument("--step1-labels", type=int, default=None,
                    help="step-1 agreement of the fast rows over the first N classes (default all on CUDA, 0 on CPU)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    args.backends, args.dtypes = args.backends.split(","), args.dtypes.split(",")
    for name in args.dtypes:
        base, _, part = name.partition("-")
        if base not in ("bf16", "fp16", "fp32", "bf16w", "fp16w") or part not in ROUNDED or (part and base[-1] != "w"):
            ap.error(f"unknown precision {name!r}: bf16, fp16, fp32, or bf16w / fp16w, alone or with -noada or -linears")
    dev = args.device
    cfg = FlexVARConfig.from_name(args.depth)
    n1 = (cfg.num_classes if dev == "cuda" else 0) if args.step1_labels is None else args.step1_labels
    if not 0 <= n1 <= cfg.num_classes:
        ap.error(f"--step1-labels takes 0 to {cfg.num_classes} (the model's classes), not {n1}")
    step1_labels = list(range(n1))
    model = random_transformer(cfg, seed=0, device=dev)
    vae = random_tokenizer(VQVAEConfig.from_name(args.tokenizer), seed=1, device=dev)
    sched = Schedule.parse(args.schedule)
    labels = [(37 * i + 3) % 1000 for i in range(args.batch)]
    p = SamplingParams(cfg=2.5, guidance="ramp", top_k=1, top_p=0.0)
    ref_pipe = Pipeline(copy.deepcopy(model), copy.deepcopy(vae), device=dev, dtype=torch.float32)
    ref = ref_pipe.generate(labels, sched, cfg=2.5, top_k=1, top_p=0.0, fast=False)
    margins = reference_margins(ref_pipe.fast_runtime, labels, sched, p, ref)
    step1_ref = step1_reference(ref_pipe.fast_runtime, step1_labels, sched, p)
    del ref_pipe
    report = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "torch": torch.__version__,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(["python -m flexvar.bench.precision"] + [shlex.quote(a) for a in (argv or sys.argv[1:])]),
              "depth": args.depth, "schedule": str(sched), "batch": args.batch,
              "reference": "torch reference runtime, float32", "rows": []}
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    tmp = None  # a temporary engine dir, kept alive until main returns
    if args.engine_dir is None and set(args.backends) - {"fast"}:
        import tempfile
        tmp = tempfile.TemporaryDirectory(prefix="flexvar-precision-")
        args.engine_dir = tmp.name
    for backend in args.backends:
        for name in args.dtypes if backend == "fast" else args.engine_dtypes.split(","):
            try:
                if backend == "fast" and name.split("-")[0] in ("bf16w", "fp16w"):
                    base, _, part = name.partition("-")
                    row = fast_row(model, vae, torch.float32, name, labels, sched, p, ref, margins, dev,
                                   round_to=dtypes[base[:-1]], rounded=part, step1_labels=step1_labels,
                                   step1_ref=step1_ref)
                elif backend == "fast":
                    row = fast_row(model, vae, dtypes[name], name, labels, sched, p, ref, margins, dev,
                                   step1_labels=step1_labels, step1_ref=step1_ref)
                else:
                    row = engine_row(backend, model, vae, dtypes[name], name, labels, sched, p, ref, margins, dev,
                                     args.engine_dir, args.depth)
            except Exception as e:  # noqa: BLE001 - one failing backend/precision is reported, the rest run
                row = {"backend": backend, "dtype": name, "error": f"{type(e).__name__}: {str(e)[:300]}"}
                print(f"precision: {backend} {name}: failed: {row['error']}", flush=True)
            else:
                print(f"precision: {backend} {name}: one-step agreement step1 {row['one_step_agreement_per_step'][0]:.4f}, "
                      f"all steps {row['one_step_agreement_all']:.4f}; free-running final codes "
                      f"{row['free_running_final_code_agreement']:.4f}; PSNR {row['psnr_db_vs_fp32_reference']} dB; "
                      "by float32 margin (nats: share of tokens, agreement) " + ", ".join(
                          f"{r['min_margin']:g}: {r['share_of_tokens']:.3f}, "
                          + ("-" if r["agreement"] is None else f"{r['agreement']:.4f}")
                          for r in row["one_step_agreement_by_fp32_margin"]),
                      flush=True)
                s1 = row.get("step1_agreement_over_labels")
                if s1:
                    print(f"precision: {backend} {name}: step 1 over {s1['labels']} labels ({s1['tokens']} tokens) "
                          f"{s1['agreement']:.4f}; by float32 margin " + ", ".join(
                              f"{r['min_margin']:g}: {r['share_of_tokens']:.3f}, "
                              + ("-" if r["agreement"] is None else f"{r['agreement']:.4f}")
                              for r in s1["by_fp32_margin"]), flush=True)
            report["rows"].append(row)
            if args.out:  # after every row: a run cut short keeps what it measured
                with open(args.out, "w") as f:
                    json.dump(report, f, indent=1)
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
