"""The block GEMMs at a generation's row counts: cuBLAS (what F.linear runs) against the `flexvar::linear`
streaming kernel, with the launcher's split count and with forced ones.

    python -m flexvar.bench.linear_small [--widths 1024,1536] [--rows 2,8,...] [--dtype fp16] [--out F.json]

Rows default to the 256-10 schedule's tokens x 2 (guidance) at batch 1. Each (layer, rows, variant)
is captured in a CUDA graph of calls over distinct copies of the weights (over 200 MB in all, so that
they come from device memory as in a generation, not from the 50 MB L2) and replayed (median of 10
replays); prints microseconds per call and the weight bytes streamed per second, and checks every
kernel result against `linear_ref`.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import datetime, timezone

import torch
import torch.nn.functional as F

from flexvar import kernels as K
from flexvar.fast import fc1_gelu
from flexvar.schedule import Schedule

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def time_cold(fns: list, replays: int = 10) -> float:
    """Microseconds per call of the callables, in order, replayed from one CUDA graph (median)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for fn in fns:
            fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for fn in fns:
            fn()
    out = []
    for _ in range(replays):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        torch.cuda.synchronize()
        out.append(a.elapsed_time(b) * 1e3 / len(fns))
    return sorted(out)[len(out) // 2]


def layers(C: int) -> list[tuple[str, int, int, bool]]:
    """(name, N, K, gelu) of a block's four GEMMs at width C."""
    return [("qkv", 3 * C, C, False), ("proj", C, C, False), ("fc1", 4 * C, C, True), ("fc2", C, 4 * C, False)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--widths", default="1024,1536", help="model widths (d16 1024, d20 1280, d24 1536)")
    ap.add_argument("--rows", default=None, help="row counts; default: 2 x the tokens of each 256-10 step")
    ap.add_argument("--splits", default="1,2,4,8", help="forced split counts to time beside the launcher's")
    ap.add_argument("--dtype", default="fp16", choices=sorted(DTYPES))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available() or not K.load():
        print("linear_small: needs a GPU and the built kernels", file=sys.stderr)
        return 2
    dt, dev = DTYPES[args.dtype], torch.device("cuda")
    rows = [int(r) for r in args.rows.split(",")] if args.rows else [2 * h * w for h, w in Schedule.parse("256-10")]
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "dtype": args.dtype,
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
           "command": " ".join(["python -m flexvar.bench.linear_small"] + (argv if argv is not None else sys.argv[1:])),
           "rows": []}
    print(f"linear_small: {out['device']}, torch {torch.__version__}, {args.dtype}, {sms} SMs")
    for C in (int(c) for c in args.widths.split(",")):
        for name, N, Kd, gelu in layers(C):
            copies = max(4, -(-200_000_000 // (N * Kd * 2)))
            ws = [(torch.randn(N, Kd, device=dev, dtype=dt) / Kd ** 0.5) for _ in range(copies)]
            b = torch.randn(N, device=dev, dtype=dt)
            act = "gelu_tanh" if gelu else "none"
            for M in rows:
                x = torch.randn(M, Kd, device=dev, dtype=dt)
                ref = K.linear_ref(x, ws[0], b, int(gelu))

                def cublas(w):
                    return fc1_gelu(x, w, b) if gelu else F.linear(x, w, b)
                variants = {"cublas": cublas, "kernel": lambda w: K.linear(x, w, b, act, max_rows=1 << 30)}
                for s in (int(v) for v in args.splits.split(",")):
                    if Kd % (64 * s) == 0:
                        variants[f"split{s}"] = lambda w, s=s: K.linear(x, w, b, act, max_rows=1 << 30, splits=s)
                row = {"width": C, "layer": name, "N": N, "K": Kd, "M": M, "weight_MB": N * Kd * x.element_size() / 1e6}
                for vname, fn in variants.items():
                    err = ((fn(ws[0]).float() - ref.float()).abs().max() / ref.float().abs().max()).item()
                    us = time_cold([lambda w=w, fn=fn: fn(w) for w in ws])
                    row[vname] = {"us": round(us, 2), "GBps": round(row["weight_MB"] * 1e-3 / (us * 1e-6), 1),
                                  "max_rel_err": err}
                best = min((v for v in row if v.startswith("split")), key=lambda v: row[v]["us"])
                row["best_split"] = best
                out["rows"].append(row)
                print(f"linear_small: C={C} {name:<4} M={M:<4} cublas {row['cublas']['us']:6.1f} us "
                      f"({row['cublas']['GBps']:5.0f} GB/s)  kernel {row['kernel']['us']:6.1f} us "
                      f"({row['kernel']['GBps']:5.0f} GB/s, err {row['kernel']['max_rel_err']:.1e})  "
                      f"best {best} {row[best]['us']:6.1f} us")
            del ws
    for C in (int(c) for c in args.widths.split(",")):
        tot = {v: sum(r[v]["us"] for r in out["rows"] if r["width"] == C) for v in ("cublas", "kernel")}
        print(f"linear_small: C={C} one block over the rows: cublas {tot['cublas']:.0f} us, kernel {tot['kernel']:.0f} us")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
