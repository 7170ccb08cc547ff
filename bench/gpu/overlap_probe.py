"""Probe: one generation of batch B as one CUDA graph against the same batch cut into N parts whose
generations run on N streams of one graph (fork/join inside the capture), d16 fp16 256-10 with decode.

The question: do the memory-bound kernels of one part (attention, LayerNorm passes, sampling, GroupNorm)
overlap with the compute-bound GEMMs and convolutions of another enough to pay for smaller GEMMs?
Also: the parts one after another on one stream (what the split costs without overlap), and the
parts staggered (part k starts when part k-1 finished its step `--stagger`).

    python3 bench/gpu/overlap_probe.py [--batches 32,64] [--parts 2,4] [--stagger 3]
"""
from __future__ import annotations

import argparse
import copy
import statistics
from collections import OrderedDict
from contextlib import contextmanager

import torch

from flexvar.config import FlexVARConfig, VQVAEConfig
from flexvar.fast import FastRuntime
from flexvar.random_weights import random_tokenizer, random_transformer
from flexvar.sampling import SamplingParams
from flexvar.schedule import Schedule


def fill(rt: FastRuntime, plan, labels: list[int], seed: int) -> None:
    """What `FastRuntime.generate` copies into a plan before its replay."""
    both = tuple(labels) + (rt.model.cfg.null_class,) * len(labels)
    cond, blocks, head = rt.modulation(both)
    plan.cond.copy_(cond), plan.blocks.copy_(blocks), plan.head.copy_(head), plan.seed.fill_(seed)


def timed(fn, repeat: int = 9) -> tuple[float, float, float]:
    ts = []
    for _ in range(repeat):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts), min(ts), max(ts)


def split_graph(rts, plans, stagger: int | None, one_stream: bool = False) -> torch.cuda.CUDAGraph:
    """One graph of every part's generation, each on its own stream (or all on one)."""
    cur = torch.cuda.current_stream()
    streams = [torch.cuda.Stream() for _ in plans]
    for rt, plan, s in zip(rts, plans, streams):  # warm-up on the streams the capture uses
        s.wait_stream(cur)
        with torch.cuda.stream(s):
            rt._body(plan)
        cur.wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        cap = torch.cuda.current_stream()
        prev_event = None
        for rt, plan, s in zip(rts, plans, streams):
            if one_stream:
                rt._body(plan)
                continue
            s.wait_stream(cap)
            if prev_event is not None:
                s.wait_event(prev_event)
            marks = {"n": 0}
            ev = torch.cuda.Event()

            @contextmanager
            def stage(name, marks=marks, ev=ev, s=s):
                yield
                if name == "sampling":
                    marks["n"] += 1
                    if stagger is not None and marks["n"] == stagger:
                        ev.record(s)

            with torch.cuda.stream(s):
                rt._body(plan, stage)
            prev_event = ev if stagger is not None else None
        if not one_stream:
            for s in streams:
                cap.wait_stream(s)
    return g


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", default="d16")
    ap.add_argument("--batches", default="32,64")
    ap.add_argument("--parts", default="2,4")
    ap.add_argument("--stagger", default="2,5")
    ap.add_argument("--schedule", default="256-10")
    a = ap.parse_args()
    dt = torch.float16
    model = random_transformer(FlexVARConfig.from_name(a.depth), device="cuda").to(dt)
    vae = random_tokenizer(VQVAEConfig.from_name("vq16"), device="cuda").to(dt)
    sched, p = Schedule.parse(a.schedule), SamplingParams()
    for B in map(int, a.batches.split(",")):
        labels = [i % 1000 for i in range(B)]
        rt = FastRuntime(model, vae)
        rt.generate(labels, sched, p, 0)
        plan = rt._plan(sched, B, p, True)
        med, lo, hi = timed(plan.graph.replay)
        print(f"{a.depth} B={B} one graph: {med:.2f} ms (min {lo:.2f}, max {hi:.2f}) = {B / med * 1e3:.0f} img/s",
              flush=True)
        ref_codes = plan.codes[-1].clone()
        for n in map(int, a.parts.split(",")):
            b = B // n
            rts = []
            for _ in range(n):  # the same compiled functions and decoder, plans of their own, no graphs
                r = copy.copy(rt)
                r._plans, r.use_graphs = OrderedDict(), False
                rts.append(r)
            plans = []
            for k, r in enumerate(rts):
                pl = r._plan(sched, b, p, True)
                fill(r, pl, labels[k * b:(k + 1) * b], 0)
                plans.append(pl)
            variants = [("one stream", None, True), ("parallel", None, False)]
            variants += [(f"stagger {s}", int(s), False) for s in a.stagger.split(",") if s]
            for name, stg, one in variants:
                g = split_graph(rts, plans, stg, one)
                med, lo, hi = timed(g.replay)
                same = sum(int((pl.codes[-1] == ref_codes[k * b:(k + 1) * b]).all()) for k, pl in enumerate(plans))
                print(f"  {n} parts of {b}, {name}: {med:.2f} ms (min {lo:.2f}, max {hi:.2f}) = "
                      f"{B / med * 1e3:.0f} img/s; parts with the one graph's last codes: {same}/{n}", flush=True)
                del g
            del rts, plans
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
