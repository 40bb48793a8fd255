"""Plots for `curate report`: small SVG documents built from plain numbers.

Pure functions, no plotting library: each returns one standalone SVG document
(with `width`, `height` and `xmlns`, so a browser shows it through an `<img>`
whose `naturalWidth` is its width). Text is escaped; nothing is fetched.
"""

from __future__ import annotations

import math
from html import escape
from typing import Mapping, Sequence

__all__ = ["PALETTE", "nice_ticks", "histogram_svg", "bars_svg", "boxplot_svg", "funnel_svg"]

# colour-blind-friendly (Okabe-Ito), then greys
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#777777")
FONT = "font-family='system-ui, -apple-system, Segoe UI, Roboto, sans-serif'"
W, H = 560, 300
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 50, 44


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"ticks need finite bounds, got {lo}, {hi}")
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start, stop = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(k * step, 10) for k in range(start, stop + 1)]


def _label(v: float) -> str:
    if abs(v) >= 10_000:
        return f"{v / 1000:g}k"
    return f"{v:g}" if v == int(v) else f"{v:.3g}"


def _doc(body: list[str], title: str, width: int = W, height: int = H) -> str:
    head = (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' viewBox='0 0 {width} {height}' {FONT} font-size='12'>"
        f"<rect width='{width}' height='{height}' fill='white'/>"
        f"<text x='{width / 2}' y='20' text-anchor='middle' font-size='14' font-weight='600' fill='#222'>{escape(title)}</text>"
    )
    return head + "".join(body) + "</svg>"


def _axes(x0: float, x1: float, y_max: float, xlabel: str, ylabel: str, x_ticks: Sequence[float] | None,
          width: int = W, height: int = H) -> tuple[list[str], callable, callable]:
    pw, ph = width - LEFT - RIGHT, height - TOP - BOTTOM

    def sx(v: float) -> float:
        return LEFT + (v - x0) / ((x1 - x0) or 1) * pw

    y_ticks = nice_ticks(0, y_max or 1, 4)
    top = y_ticks[-1]

    def sy(v: float) -> float:
        return TOP + ph - v / (top or 1) * ph

    out = []
    for t in y_ticks:
        out.append(f"<line x1='{LEFT}' x2='{LEFT + pw}' y1='{sy(t):.1f}' y2='{sy(t):.1f}' stroke='#e5e5e5'/>")
        out.append(f"<text x='{LEFT - 6}' y='{sy(t) + 4:.1f}' text-anchor='end' fill='#444'>{_label(t)}</text>")
    for t in x_ticks or []:
        if x0 - 1e-9 <= t <= x1 + 1e-9:
            out.append(f"<line x1='{sx(t):.1f}' x2='{sx(t):.1f}' y1='{TOP + ph}' y2='{TOP + ph + 4}' stroke='#444'/>")
            out.append(f"<text x='{sx(t):.1f}' y='{TOP + ph + 17}' text-anchor='middle' fill='#444'>{_label(t)}</text>")
    out.append(f"<line x1='{LEFT}' x2='{LEFT + pw}' y1='{TOP + ph}' y2='{TOP + ph}' stroke='#444'/>")
    out.append(f"<text x='{LEFT + pw / 2}' y='{height - 8}' text-anchor='middle' fill='#222'>{escape(xlabel)}</text>")
    out.append(
        f"<text x='14' y='{TOP + ph / 2}' text-anchor='middle' fill='#222' transform='rotate(-90 14 {TOP + ph / 2})'>{escape(ylabel)}</text>"
    )
    return out, sx, sy


def _legend(names: Sequence[str], colors: Sequence[str], width: int = W) -> list[str]:
    out, x = [], width - RIGHT
    for name, color in reversed(list(zip(names, colors))):
        w = 18 + 7 * len(name)
        x -= w
        out.append(f"<rect x='{x}' y='{TOP - 20}' width='10' height='10' fill='{color}'/>")
        out.append(f"<text x='{x + 14}' y='{TOP - 11}' fill='#222' font-size='11'>{escape(name)}</text>")
    return out


def histogram_svg(
    edges: Sequence[float],
    counts: Mapping[str, Sequence[int]],
    title: str,
    xlabel: str,
    ylabel: str = "rows",
    lines: Mapping[str, float] | None = None,
    colors: Sequence[str] | None = None,
    stacked: bool = True,
) -> str:
    """Histogram: `counts[series][i]` rows in [edges[i], edges[i+1]), series stacked or side by side in each bin;
    `lines`: labelled vertical lines (a threshold)."""
    if len(edges) < 2:
        raise ValueError(f"a histogram needs at least 2 edges, got {len(edges)}")
    names = list(counts)
    colors = list(colors or PALETTE)
    nbins = len(edges) - 1
    for name in names:
        if len(counts[name]) != nbins:
            raise ValueError(f"series {name!r} has {len(counts[name])} counts for {nbins} bins")
    if stacked:
        totals = [sum(counts[n][i] for n in names) for i in range(nbins)]
    else:
        totals = [max((counts[n][i] for n in names), default=0) for i in range(nbins)]
    x0, x1 = edges[0], edges[-1]
    for v in (lines or {}).values():
        x0, x1 = min(x0, v), max(x1, v)
    body, sx, sy = _axes(x0, x1, max(totals, default=0), xlabel, ylabel, nice_ticks(x0, x1, 6))
    for i in range(nbins):
        base = 0
        for k, name in enumerate(names):
            c = counts[name][i]
            if not c:
                continue
            xa, xb = sx(edges[i]), sx(edges[i + 1])
            if not stacked:
                step = (xb - xa) / len(names)
                xa, xb, base = xa + k * step, xa + (k + 1) * step, 0
            body.append(
                f"<rect x='{xa + 0.5:.1f}' y='{sy(base + c):.1f}' width='{max(xb - xa - 1, 1):.1f}' "
                f"height='{sy(base) - sy(base + c):.1f}' fill='{colors[k % len(colors)]}'><title>{escape(name)}: {c}</title></rect>"
            )
            base += c
    for label, v in (lines or {}).items():
        x = sx(v)
        body.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{TOP}' y2='{H - BOTTOM}' stroke='#C00' stroke-width='2' stroke-dasharray='5 3'/>")
        anchor = "end" if x > LEFT + (W - LEFT - RIGHT) * 0.7 else "start"
        body.append(f"<text x='{x + (-4 if anchor == 'end' else 4):.1f}' y='{TOP + 12}' fill='#C00' font-size='11' text-anchor='{anchor}'>{escape(label)}</text>")
    if len(names) > 1 or (names and names[0]):
        body += _legend(names, colors[: len(names)])
    return _doc(body, title)


def bars_svg(
    categories: Sequence[str],
    series: Mapping[str, Sequence[float]],
    title: str,
    ylabel: str,
    colors: Sequence[str] | None = None,
    value_format: str = "{:g}",
) -> str:
    """Grouped vertical bars: one group per category, one bar per series; values written above the bars."""
    names = list(series)
    colors = list(colors or PALETTE)
    top = max((v for n in names for v in series[n]), default=0)
    width = max(W, LEFT + RIGHT + len(categories) * max(26 * len(names) + 24, 8 * max((len(c) for c in categories), default=0) + 12))
    body, _, sy = _axes(0, 1, top * 1.12, "", ylabel, None, width=width)
    pw = width - LEFT - RIGHT
    group = pw / max(len(categories), 1)
    bar = min(34.0, (group - 14) / max(len(names), 1))
    for i, cat in enumerate(categories):
        gx = LEFT + i * group + (group - bar * len(names)) / 2
        for k, name in enumerate(names):
            v = series[name][i]
            x = gx + k * bar
            body.append(
                f"<rect x='{x:.1f}' y='{sy(v):.1f}' width='{bar - 2:.1f}' height='{sy(0) - sy(v):.1f}' "
                f"fill='{colors[k % len(colors)]}'><title>{escape(name)} {escape(cat)}: {value_format.format(v)}</title></rect>"
            )
            body.append(f"<text x='{x + bar / 2 - 1:.1f}' y='{sy(v) - 3:.1f}' text-anchor='middle' fill='#333' font-size='10'>{escape(value_format.format(v))}</text>")
        body.append(f"<text x='{LEFT + (i + 0.5) * group:.1f}' y='{H - BOTTOM + 17}' text-anchor='middle' fill='#222' font-size='11'>{escape(cat)}</text>")
    body += _legend(names, colors[: len(names)], width=width)
    return _doc(body, title, width=width)


def boxplot_svg(groups: Sequence[tuple[str, Sequence[float]]], title: str, xlabel: str) -> str:
    """Horizontal box plots: `(name, (min, q1, median, q3, max))` per row."""
    height = TOP + BOTTOM + 34 * max(len(groups), 1)
    lo = min((g[1][0] for g in groups), default=0)
    hi = max((g[1][4] for g in groups), default=1)
    ticks = nice_ticks(lo, hi, 6)
    x0, x1 = ticks[0], ticks[-1]
    left = 170
    pw = W - left - RIGHT

    def sx(v: float) -> float:
        return left + (v - x0) / ((x1 - x0) or 1) * pw

    body = []
    for t in ticks:
        body.append(f"<line x1='{sx(t):.1f}' x2='{sx(t):.1f}' y1='{TOP - 4}' y2='{height - BOTTOM}' stroke='#e5e5e5'/>")
        body.append(f"<text x='{sx(t):.1f}' y='{height - BOTTOM + 17}' text-anchor='middle' fill='#444'>{_label(t)}</text>")
    body.append(f"<text x='{left + pw / 2}' y='{height - 8}' text-anchor='middle' fill='#222'>{escape(xlabel)}</text>")
    for i, (name, (mn, q1, med, q3, mx)) in enumerate(groups):
        cy = TOP + 13 + 34 * i
        color = PALETTE[i % len(PALETTE)]
        body.append(f"<text x='{left - 8}' y='{cy + 4}' text-anchor='end' fill='#222'>{escape(name)}</text>")
        body.append(f"<line x1='{sx(mn):.1f}' x2='{sx(mx):.1f}' y1='{cy}' y2='{cy}' stroke='#555'/>")
        for v in (mn, mx):
            body.append(f"<line x1='{sx(v):.1f}' x2='{sx(v):.1f}' y1='{cy - 6}' y2='{cy + 6}' stroke='#555'/>")
        body.append(
            f"<rect x='{sx(q1):.1f}' y='{cy - 10}' width='{max(sx(q3) - sx(q1), 1):.1f}' height='20' fill='{color}' fill-opacity='0.75' stroke='#333'>"
            f"<title>{escape(name)}: min {mn:g}, q1 {q1:g}, median {med:g}, q3 {q3:g}, max {mx:g}</title></rect>"
        )
        body.append(f"<line x1='{sx(med):.1f}' x2='{sx(med):.1f}' y1='{cy - 10}' y2='{cy + 10}' stroke='#111' stroke-width='2'/>")
    return _doc(body, title, height=height)


def funnel_svg(stages: Sequence[tuple[str, int, int]], title: str) -> str:
    """Rows into and out of each stage: one horizontal bar per stage (out solid, dropped hatched in red)."""
    height = TOP + 10 + 30 * max(len(stages), 1)
    top = max((max(i, o) for _, i, o in stages), default=1) or 1
    left, pw = 90, W - 90 - 130
    body = []
    for k, (name, rows_in, rows_out) in enumerate(stages):
        y = TOP - 8 + 30 * k
        kept = min(rows_in, rows_out) / top * pw
        body.append(f"<text x='{left - 8}' y='{y + 15}' text-anchor='end' fill='#222'>{escape(name)}</text>")
        body.append(f"<rect x='{left}' y='{y}' width='{rows_in / top * pw:.1f}' height='22' fill='#F4C7C3'/>")
        body.append(f"<rect x='{left}' y='{y}' width='{kept:.1f}' height='22' fill='{PALETTE[0]}'/>")
        dropped = max(rows_in - rows_out, 0)
        note = f"{rows_in} → {rows_out}" + (f" (−{dropped})" if dropped else "")
        body.append(f"<text x='{left + max(rows_in, rows_out) / top * pw + 6:.1f}' y='{y + 15}' fill='#222' font-size='11'>{escape(note)}</text>")
    return _doc(body, title, height=height)
