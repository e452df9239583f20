"""Checks every published figure must pass, read from the renderer's bounding boxes (not
pixels): no text outside the canvas, no two texts overlapping, no code key or plain-text
notation in any label."""

from __future__ import annotations

import re

import numpy as np
from matplotlib.text import Text

#: what must never be shown: code keys of algorithms and the paper's symbols in plain text
FORBIDDEN = re.compile(
    r"\b(erm|irm|vrex|fishr(_\w+)?)\b|I\^ε|I\^eps|R_B|R_A|lambda_max|\bx100\b|×100"
)


def visible_texts(fig) -> list[Text]:
    """Every visible, non-empty text artist the figure draws."""
    fig.canvas.draw()
    tick_labels, drawn = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                tick_labels |= {id(tick.label1), id(tick.label2)}
            for tick in axis._update_ticks():  # the ticks within the view, those drawn
                drawn += [t for t in (tick.label1, tick.label2) if t.get_visible()]
    texts = [t for t in fig.findobj(Text) if id(t) not in tick_labels and t.get_visible()]
    return [t for t in texts + drawn if t.get_text().strip()]


def _boxes(fig):
    renderer = fig.canvas.get_renderer()
    return [(t, t.get_window_extent(renderer)) for t in visible_texts(fig)]


def text_problems(fig, tolerance: float = 1.0) -> list[str]:
    """Texts outside the canvas, overlapping pairs, forbidden labels (empty: all good)."""
    problems = []
    canvas = fig.bbox
    boxes = _boxes(fig)
    for t, box in boxes:
        if (box.x0 < canvas.x0 - tolerance or box.y0 < canvas.y0 - tolerance
                or box.x1 > canvas.x1 + tolerance or box.y1 > canvas.y1 + tolerance):  # fmt: skip
            problems.append(f"outside the canvas: {t.get_text()!r}")
        if FORBIDDEN.search(t.get_text()):
            problems.append(f"code key or plain notation: {t.get_text()!r}")
    for k, (t, box) in enumerate(boxes):
        for u, other in boxes[k + 1 :]:
            inter_w = min(box.x1, other.x1) - max(box.x0, other.x0)
            inter_h = min(box.y1, other.y1) - max(box.y0, other.y0)
            if inter_w > tolerance and inter_h > tolerance:
                problems.append(f"overlap: {t.get_text()!r} and {u.get_text()!r}")
    return problems


def assert_publishable(fig) -> None:
    problems = text_problems(fig)
    assert not problems, "\n".join(problems)


def png_size_and_dpi(path):
    """``(width px, height px, dpi)`` of a PNG (dpi from its pHYs chunk, via Pillow)."""
    from PIL import Image

    with Image.open(path) as im:
        dpi = im.info.get("dpi", (np.nan, np.nan))[0]
        return im.width, im.height, float(dpi)
