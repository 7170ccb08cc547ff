"""Markdown tables of committed benchmark results (the README's tables are pasted from this).

    python -m flexvar.bench.report bench/results/*.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _command(cmd: str) -> str:
    """The command as a user types it (the interpreter's path dropped; $OUT for the device's output folder)."""
    first, _, rest = cmd.partition(" ")
    return (Path(first).name + " " + rest).replace("/root/out/", "$OUT/")


def host_table(paths: list[str]) -> str:
    """The C++ host next to the Python runtimes (bench/host_latency.py files)."""
    out = ["| model | schedule | batch | implementation | ms (min–max) | img/s |", "|---|---|---|---|---|---|"]
    meta = []
    for p in paths:
        d = json.loads(Path(p).read_text())
        if "results" not in d or "model" not in d:
            continue
        meta.append(f"- `{Path(p).name}`: {d['device']}, {d['date']}, torch {d['torch']}, {d['dtype']}, decode "
                    f"{'included' if d['decode_included'] else 'excluded'}; command `{_command(d['command'])}`")
        for r in sorted(d["results"], key=lambda r: (r["batch"], r["impl"])):
            out.append(f"| {d['model']} | {d['schedule']} | {r['batch']} | {r['impl']} | {r['median_ms']:.1f} "
                       f"({r['min_ms']:.1f}–{r['max_ms']:.1f}) | {r['images_per_s']:.0f} |")
    return "\n".join(out + [""] + meta) if meta else ""


def table(paths: list[str]) -> str:
    """One section per benchmark file (in the order given): its device, date, command and table."""
    out = []
    for p in paths:
        d = json.loads(Path(p).read_text())
        if "results" not in d or "model" in d:  # host_latency files: host_table
            continue
        out += [f"### `{Path(p).name}`", "",
                f"{d['device']}, {d['date']}, torch {d['torch']}, fast runtime {d['dtype']}, eager under "
                f"{d['autocast_eager']} autocast, decode {'included' if d['decode_included'] else 'excluded'}; "
                f"ceilings {d['ceilings']}; command `{_command(d['command'])}`", ""]
        out += _file_table(d["results"]) + [""]
    return "\n".join(out)


def _file_table(results: list[dict]) -> list[str]:
    by = {}
    for r in results:
        by.setdefault((r["depth"], r["schedule"], r["image"], r["batch"]), {})[r["impl"]] = r
    cell = lambda r: f"{r['median_ms']:.1f} ({r['min_ms']:.1f}–{r['max_ms']:.1f})" if r else "–"  # noqa: E731
    out = []
    if any("fast" in impls for impls in by.values()):
        out += ["| model | schedule | image | batch | eager ms (min–max) | fast ms (min–max) | speed-up | fast img/s | "
                "fast TFLOP/s | fast weights GB/s |", "|---|---|---|---|---|---|---|---|---|---|"]
        for (depth, sched, image, B), impls in by.items():
            e, f = impls.get("eager"), impls.get("fast")
            if not f:
                continue
            sp = f"{e['median_ms'] / f['median_ms']:.1f}×" if e else "–"
            name = sched if len(sched) < 12 else f"{len(sched.split(','))} steps, 1:2"
            out.append(f"| {depth} | {name} | {image} | {B} | {cell(e)} | {cell(f)} | {sp} | {f['images_per_s']:.0f} | "
                       f"{f.get('TFLOPs', '–')} | {f.get('weights_GBps', '–')} |")
    others = [(k, name, r) for k, impls in by.items() for name, r in impls.items()
              if name not in ("eager", "fast") or "fast" not in impls]
    if others:
        out += ["", "| model | schedule | batch | implementation | ms (min–max) | img/s | warm-up s |",
                "|---|---|---|---|---|---|---|"]
        for (depth, sched, _, B), name, r in others:
            out.append(f"| {depth} | {sched} | {B} | {name} | {cell(r)} | {r['images_per_s']:.0f} | {r['warmup_s']} |")
    return out


if __name__ == "__main__":
    print(table(sys.argv[1:]))
    host = host_table(sys.argv[1:])
    if host:
        print("\n" + host)
