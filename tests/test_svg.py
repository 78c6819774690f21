"""The dedup report's SVG charts, read back as XML and checked against the numbers they draw."""

import math
import random
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from pileprep.formats import svg

NS = "{http://www.w3.org/2000/svg}"


def _parse(text: str):
    root = ET.fromstring(text)
    bars = [e for e in root.iter(f"{NS}rect") if e.get("fill") == svg.BAR]
    texts = [e.text for e in root.iter(f"{NS}text")]
    return root, bars, texts


def _f(e, name):
    return float(e.get(name))


def test_bars_are_as_long_as_their_values_and_labelled_in_order():
    labels = ["Pile-CC", "A&B <x> \"q\"", "(none)", "FreeLaw"]
    values = [12.5, 100.0, 0.0, 37.25]
    text = svg.bars(labels, values, "title & more", "documents removed (%)")
    assert text == svg.bars(labels, values, "title & more", "documents removed (%)")
    root, bars, texts = _parse(text)
    assert root.tag == f"{NS}svg"
    assert len(bars) == len(values)
    assert [_f(b, "y") for b in bars] == sorted(_f(b, "y") for b in bars)  # first at the top
    full = _f(bars[1], "width") / values[1]  # px per unit, from the longest bar
    for b, v in zip(bars, values):
        assert _f(b, "width") == pytest.approx(v * full, abs=0.11)
    for label in labels:
        assert label in texts  # escaped in the file, the same text read back
    assert "title & more" in texts and "documents removed (%)" in texts
    # the axis reaches the longest bar: its last tick's label is at least the largest value
    ticks = [float(t.replace(",", "")) for t in texts if t.replace(",", "").replace(".", "").isdigit()]
    assert max(ticks) >= max(values)


def test_long_or_unusual_names_keep_the_chart_valid():
    """A subset name is free text from the input: a long one is cut (whole in its bar's
    tooltip), a character XML forbids is replaced; the file stays valid and the bars start at
    the same place, inside the picture."""
    long = "a very long subset name " * 6
    labels = [long, "ctrl\x01char", "ok"]
    root, bars, texts = _parse(svg.bars(labels, [5.0, 3.0, 1.0], "t", "x"))
    width = float(root.get("width"))
    assert all(0 < _f(b, "x") < width / 2 and _f(b, "width") > 0 for b in bars[:2])
    shown = [t for t in texts if t and t.startswith("a very long")]
    assert len(shown) == 1 and len(shown[0]) == svg.LABEL_CHARS and shown[0].endswith("\u2026")
    assert [b.find(f"{NS}title").text for b in bars] == [long, "ctrl\ufffdchar", "ok"]


def _count(values, edges):
    """Values per bin, by a loop (the last bin includes its right edge)."""
    counts = [0] * (len(edges) - 1)
    for v in values:
        for i in range(len(counts)):
            last = i == len(counts) - 1
            if edges[i] <= v < edges[i + 1] or (last and v == edges[-1]):
                counts[i] += 1
                break
    return counts


def test_histogram_bars_are_as_tall_as_their_bins():
    rng = random.Random(3)
    values = [rng.uniform(0.85, 1.0) for _ in range(500)] + [1.0, 0.5]
    edges = [0.5 + i * 0.0125 for i in range(41)]
    _, bars, texts = _parse(svg.histogram(np.array(values), edges, "t", "x", "documents"))
    counts = [c for c in _count(values, edges) if c]
    assert len(bars) == len(counts)
    assert [_f(b, "x") for b in bars] == sorted(_f(b, "x") for b in bars)
    tallest = max(range(len(counts)), key=counts.__getitem__)
    per = _f(bars[tallest], "height") / counts[tallest]  # px per document
    for b, c in zip(bars, counts):
        assert _f(b, "height") == pytest.approx(c * per, abs=0.11)
    bottoms = {round(_f(b, "y") + _f(b, "height"), 1) for b in bars}
    assert len(bottoms) == 1  # every bar stands on the axis
    assert "documents" in texts


def test_empty_histogram_is_an_axis_without_bars():
    _, bars, texts = _parse(svg.histogram(np.zeros(0), np.linspace(0.5, 1.0, 41), "none",
                                          "x", "y"))
    assert bars == [] and "none" in texts


@pytest.mark.parametrize("seed", range(20))
def test_ticks_are_round_and_cover_the_range(seed):
    rng = random.Random(seed)
    top = rng.choice([0, 1e-3, 0.7, 1, 7, 99.67, 100, 103, 447, 12345, 2.5e6]) * rng.choice([1, 1.3])
    ticks = svg.ticks_up_to(top)
    step = ticks[1] - ticks[0]
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert any(math.isclose(mantissa, m) for m in (1, 2, 5, 10))
    assert ticks[0] == 0 and ticks[-1] >= top and ticks[-2] < top or top == 0
    assert 2 <= len(ticks) <= 11
    lo, hi = sorted([rng.uniform(0, 1), rng.uniform(0, 1)])
    inside = svg.ticks_between(lo, hi + 0.05)
    assert all(lo - 1e-9 <= t <= hi + 0.05 + 1e-9 for t in inside) and len(inside) >= 2
