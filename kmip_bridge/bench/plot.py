"""The sweep's curve as a self-contained SVG (no plotting dependency): ops/s and p99 against clients,
one series per server, clients on a log scale. Each series is a ``<g class="series">`` carrying
``data-target`` and ``data-metric``, each point a ``<circle>`` with ``data-clients`` and ``data-value``,
so that a test (or a reader) can check the picture against the JSON it came from."""

from __future__ import annotations

import math
from xml.sax.saxutils import escape, quoteattr

PANEL_W, PANEL_H = 420, 300
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 64, 16, 36, 48
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")

# points: {target: [(clients, value), ...]}
Series = dict[str, list[tuple[int, float]]]


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """0 and round steps (1, 2, 2.5, 5 times 10^k) up to at least ``top``."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    n = math.ceil(top / step)
    return [round(i * step, 10) for i in range(n + 1)]


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 or v == int(v) else f"{v:g}"


def panel(x0: float, title: str, y_label: str, series: Series, clients: list[int],
          colours: dict[str, str]) -> list[str]:
    """One chart at horizontal offset ``x0``."""
    left, top = x0 + MARGIN_L, MARGIN_T
    w, h = PANEL_W - MARGIN_L - MARGIN_R, PANEL_H - MARGIN_T - MARGIN_B
    values = [v for pts in series.values() for _, v in pts if v is not None]
    ticks = nice_ticks(max(values, default=1.0))
    y_top = ticks[-1] or 1.0
    lo, hi = math.log(min(clients)), math.log(max(clients))

    pad = 14  # keeps the first and last points off the frame

    def px(c: int) -> float:
        return left + (w / 2 if hi == lo else pad + (math.log(c) - lo) / (hi - lo) * (w - 2 * pad))

    def py(v: float) -> float:
        return top + h - v / y_top * h

    out = [f'<g class="panel" data-title={quoteattr(title)}>',
           f'<text x="{left + w / 2:.1f}" y="{top - 14}" text-anchor="middle" font-weight="bold">'
           f"{escape(title)}</text>",
           f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#999"/>']
    for t in ticks:
        y = py(t)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + w}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    for c in clients:
        x = px(c)
        out.append(f'<line x1="{x:.1f}" y1="{top + h}" x2="{x:.1f}" y2="{top + h + 5}" stroke="#999"/>')
        out.append(f'<text x="{x:.1f}" y="{top + h + 18}" text-anchor="middle">{c}</text>')
    out.append(f'<text x="{left + w / 2:.1f}" y="{top + h + 38}" text-anchor="middle">clients (log scale)</text>')
    out.append(f'<text transform="translate({x0 + 14},{top + h / 2:.1f}) rotate(-90)" '
               f'text-anchor="middle">{escape(y_label)}</text>')
    for target, pts in series.items():
        pts = sorted((c, v) for c, v in pts if v is not None)
        colour = colours[target]
        out.append(f'<g class="series" data-target={quoteattr(target)} data-metric={quoteattr(y_label)}>')
        if len(pts) > 1:
            path = " ".join(f"{px(c):.1f},{py(v):.1f}" for c, v in pts)
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for c, v in pts:
            out.append(f'<circle cx="{px(c):.1f}" cy="{py(v):.1f}" r="3.5" fill="{colour}" '
                       f'data-clients="{c}" data-value="{v}"><title>{escape(target)}: {c} clients, '
                       f'{_fmt(v)}</title></circle>')
        out.append("</g>")
    out.append("</g>")
    return out


def sweep_svg(title: str, ops: Series, p99: Series, p99_label: str) -> str:
    """Two panels side by side (ops/s, p99) and a legend; ``ops`` and ``p99`` share their targets."""
    targets = list(dict.fromkeys([*ops, *p99]))
    colours = {t: COLOURS[i % len(COLOURS)] for i, t in enumerate(targets)}
    clients = sorted({c for s in (ops, p99) for pts in s.values() for c, _ in pts}) or [1]
    width, height = 2 * PANEL_W, PANEL_H + 64
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f"<title>{escape(title)}</title>",
           f'<rect width="{width}" height="{height}" fill="white"/>']
    out += panel(0, "throughput", "ops/s", ops, clients, colours)
    out += panel(PANEL_W, "tail latency", p99_label, p99, clients, colours)
    x = MARGIN_L
    y = PANEL_H + 24
    out.append('<g class="legend">')
    for t in targets:
        out.append(f'<rect x="{x}" y="{y - 10}" width="12" height="12" fill="{colours[t]}"/>')
        out.append(f'<text x="{x + 18}" y="{y}">{escape(t)}</text>')
        x += 30 + 8 * len(t)
    out.append(f'<text x="{MARGIN_L}" y="{y + 22}" fill="#555">{escape(title)}</text>')
    out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"
