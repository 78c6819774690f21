"""Charts written as SVG text: the dedup report's bars per subset and its similarity histogram.

Both are simple enough to write directly, and a build's driver draws them after its last
stage: matplotlib there cost 0.5 s to import and 0.2-0.4 s to draw, most of what ``--dedup``
added to a 60 MB build. As text, the file holds the exact values, and the same chart always
gives the same bytes. Viewers (browsers, GitHub, editors) draw the labels in their own
sans-serif font, so the room left for a label is estimated from its length.
"""

from __future__ import annotations

import math
import re
from typing import Sequence
from xml.sax.saxutils import escape

import numpy as np

BAR = "#4c72b0"
CHAR_PX = 7.0  # the width of a 12 px sans-serif character, about (label room)
WIDTH = 800
LABEL_CHARS = 40  # a longer bar label is cut, its whole text kept as the bar's tooltip
# Characters XML 1.0 does not allow (C0 controls but tab and newlines, lone surrogates,
# U+FFFE/U+FFFF): a subset name is free text from the input, and one would void the file.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_FONT = 'font-family="DejaVu Sans,Helvetica,Arial,sans-serif" font-size="12"'


def nice_step(span: float, count: int = 5) -> float:
    """A tick spacing of 1, 2 or 5 times a power of ten giving about ``count`` ticks over
    ``span``."""
    raw = span / count if span > 0 else 1.0
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw * (1 - 1e-9))


def ticks_between(lo: float, hi: float, count: int = 5) -> list[float]:
    """Multiples of a :func:`nice_step` from ``lo`` to ``hi`` (both included when they are
    multiples), rounded so that 0.1 * 3 prints as 0.3."""
    step = nice_step(hi - lo, count)
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def ticks_up_to(top: float, count: int = 5) -> list[float]:
    """Ticks from 0 to the first multiple of a :func:`nice_step` that reaches ``top`` (an
    axis that holds every bar)."""
    if top <= 0:  # nothing to show: an axis from 0 to 1
        return [0.0, 1.0]
    step = nice_step(top, count)
    return [round(k * step, 12) for k in range(max(1, math.ceil(top / step - 1e-9)) + 1)]


def _text(s: str) -> str:
    """``s`` as XML character data."""
    return escape(_NOT_XML.sub("\ufffd", s))


def _num(value: float) -> str:
    return f"{value:.1f}"


def _label(value: float) -> str:
    """A tick's label: 200,000 rather than 2e+05; 0.85 as it is."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


class _Canvas:
    """An SVG picture with a plot box inside margins; y grows downwards, as in SVG."""

    def __init__(self, height: float, left: float, top: float = 36, right: float = 24,
                 bottom: float = 48):
        self.height = height
        self.x0, self.x1 = left, WIDTH - right
        self.y0, self.y1 = top, height - bottom
        self.items: list[str] = []

    def rect(self, x: float, y: float, w: float, h: float, tooltip: str = "") -> None:
        attrs = (f'x="{_num(x)}" y="{_num(y)}" width="{_num(w)}" height="{_num(h)}" '
                 f'fill="{BAR}" stroke="#fff" stroke-width="0.5"')
        self.items.append(f"<rect {attrs}><title>{_text(tooltip)}</title></rect>" if tooltip
                          else f"<rect {attrs}/>")

    def line(self, x1: float, y1: float, x2: float, y2: float) -> None:
        self.items.append(f'<line x1="{_num(x1)}" y1="{_num(y1)}" x2="{_num(x2)}" '
                          f'y2="{_num(y2)}" stroke="#000" stroke-width="1"/>')

    def text(self, x: float, y: float, s: str, anchor: str = "middle", rotate: bool = False) -> None:
        turn = f' transform="rotate(-90 {_num(x)} {_num(y)})"' if rotate else ""
        self.items.append(f'<text x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}"{turn}>'
                          f'{_text(s)}</text>')

    def x_axis(self, ticks: Sequence[float], at, label: str) -> None:
        """The bottom axis: ``at(value)`` is a value's x."""
        self.line(self.x0, self.y1, self.x1, self.y1)
        for t in ticks:
            self.line(at(t), self.y1, at(t), self.y1 + 4)
            self.text(at(t), self.y1 + 17, _label(t))
        self.text((self.x0 + self.x1) / 2, self.height - 8, label)

    def y_axis(self, ticks: Sequence[float], at, label: str) -> None:
        """The left axis: ``at(value)`` is a value's y."""
        self.line(self.x0, self.y0, self.x0, self.y1)
        for t in ticks:
            self.line(self.x0 - 4, at(t), self.x0, at(t))
            self.text(self.x0 - 7, at(t) + 4, _label(t), "end")
        self.text(14, (self.y0 + self.y1) / 2, label, rotate=True)

    def svg(self, title: str) -> str:
        head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
                f'height="{_num(self.height)}" viewBox="0 0 {WIDTH} {_num(self.height)}" {_FONT}>')
        body = [f'<rect width="100%" height="100%" fill="#fff"/>',
                f'<text x="{WIDTH / 2:.1f}" y="22" text-anchor="middle" font-size="14">'
                f'{_text(title)}</text>', *self.items]
        return "\n".join([head, *body, "</svg>", ""])


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "\u2026"


def bars(labels: Sequence[str], values: Sequence[float], title: str, xlabel: str) -> str:
    """Horizontal bars, the first label at the top, from 0 to each value (labels longer than
    ``LABEL_CHARS`` cut, whole in the bar's tooltip)."""
    row = 22
    left = 16 + CHAR_PX * max((len(_short(s)) for s in labels), default=1)
    c = _Canvas(36 + row * max(1, len(labels)) + 8 + 48, left)
    ticks = ticks_up_to(max(values, default=0))
    scale = (c.x1 - c.x0) / ticks[-1]
    for i, (label, value) in enumerate(zip(labels, values)):
        y = c.y0 + 4 + i * row
        c.rect(c.x0, y, value * scale, row - 6, tooltip=label)
        c.text(c.x0 - 6, y + row / 2 + 1, _short(label), "end")
    c.x_axis(ticks, lambda v: c.x0 + v * scale, xlabel)
    c.line(c.x0, c.y0, c.x0, c.y1)
    return c.svg(title)


def histogram(values: np.ndarray, edges: Sequence[float], title: str, xlabel: str,
              ylabel: str) -> str:
    """A bar per bin ``[edges[i], edges[i+1])`` (the last bin includes its right edge, as
    ``numpy.histogram``) as tall as the values in it."""
    counts, _ = np.histogram(np.asarray(values, np.float64), np.asarray(edges, np.float64))
    c = _Canvas(350, 64)
    lo, hi = float(edges[0]), float(edges[-1])
    yticks = ticks_up_to(counts.max(initial=0))
    sx = (c.x1 - c.x0) / (hi - lo)
    sy = (c.y1 - c.y0) / yticks[-1]
    for a, b, n in zip(edges[:-1], edges[1:], counts.tolist()):
        if n:
            c.rect(c.x0 + (a - lo) * sx, c.y1 - n * sy, (b - a) * sx, n * sy)
    c.x_axis(ticks_between(lo, hi), lambda v: c.x0 + (v - lo) * sx, xlabel)
    c.y_axis(yticks, lambda v: c.y1 - v * sy, ylabel)
    return c.svg(title)
