"""A dependency-free PNG line plot (Pillow only): steps against latency, one line per series."""
from __future__ import annotations

import math

from PIL import Image, ImageDraw

from flexvar.files import replaced

COLORS = [(214, 39, 40), (31, 119, 180), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75),
          (227, 119, 194), (127, 127, 127)]


def _save(img: Image.Image, path: str) -> None:
    """The PNG replaced whole (`flexvar.files.replaced`)."""
    with replaced(path) as tmp:
        img.save(tmp, format="PNG")


def line_plot(series: dict[str, list[tuple[float, float]]], path: str, title: str, xlabel: str, ylabel: str,
              log_y: bool = True, size=(900, 560)) -> None:
    W, H = size
    L, R, T, Bm = 80, 220, 50, 60
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    pts = [p for s in series.values() for p in s if p[1] > 0]
    if not pts:
        d.text((L, T), "no data", fill="black")
        _save(img, path)
        return
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    fy = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    y0, y1 = fy(min(ys)), fy(max(ys))
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad

    def px(x, y):
        return L + (x - x0) / (x1 - x0) * (W - L - R), H - Bm - (fy(y) - y0) / (y1 - y0) * (H - T - Bm)

    d.rectangle((L, T, W - R, H - Bm), outline="black")
    for x in sorted(set(xs)):
        X, _ = px(x, 10 ** y0 if log_y else y0)
        d.line((X, H - Bm, X, H - Bm + 5), fill="black")
        d.text((X - 6, H - Bm + 8), f"{x:g}", fill="black")
    ticks = [10 ** e * m for e in range(math.floor(y0) - 1, math.ceil(y1) + 1) for m in (1, 2, 5)] if log_y else \
        [y0 + i * (y1 - y0) / 5 for i in range(6)]
    for t in ticks:
        if y0 <= fy(t) <= y1:
            _, Y = px(x0, t)
            d.line((L - 5, Y, W - R, Y), fill=(225, 225, 225))
            d.text((8, Y - 6), f"{t:g}", fill="black")
    for i, (name, s) in enumerate(series.items()):
        c = COLORS[i % len(COLORS)]
        s = sorted(p for p in s if p[1] > 0)
        d.line([px(*p) for p in s], fill=c, width=3)
        for p in s:
            X, Y = px(*p)
            d.ellipse((X - 3, Y - 3, X + 3, Y + 3), fill=c)
        d.line((W - R + 15, T + 20 * i + 7, W - R + 35, T + 20 * i + 7), fill=c, width=3)
        d.text((W - R + 40, T + 20 * i), name[:28], fill="black")
    d.text((L, 15), title, fill="black")
    d.text(((L + W - R) // 2 - 20, H - 25), xlabel, fill="black")
    d.text((8, 25), ylabel + (" (log)" if log_y else ""), fill="black")
    _save(img, path)
