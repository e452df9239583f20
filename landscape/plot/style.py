"""One visual style for every figure of the project, applied when drawing AND when saving.

A figure is sized for a two-column paper (:data:`WIDTHS`: one column, 3.3 in, or the full
width, 6.9 in) with 7-8 pt text, drawn under :func:`style` (constrained layout, so that no
label leaves the canvas), and written by :func:`save_figure`, which applies the same style
at save time and writes a PNG at :data:`DPI` and a PDF of the exact size asked for.

Colours are the Okabe-Ito palette (distinguishable under the common colour-vision
deficiencies); each algorithm and each domain also gets a line style and a marker, a second
cue that survives grey-scale printing (:func:`algorithm_style`, :func:`domain_style`).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

from landscape.names import ALGORITHM_NAMES, algorithm_name

#: Figure widths (inches) of a two-column paper.
WIDTHS = {"column": 3.3, "full": 6.9}
#: Resolution of the PNGs.
DPI = 300
#: Formats :func:`save_figure` writes.
FORMATS = ("png", "pdf")

#: The Okabe-Ito colour-blind-safe palette.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky blue": "#56B4E9",
    "bluish green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish purple": "#CC79A7",
}

_O = OKABE_ITO
#: Colour, line style and marker of each algorithm (the same in every figure).
ALGORITHM_STYLES: dict[str, dict] = {
    "erm": {"color": _O["blue"], "ls": "-", "marker": "o"},
    "irm": {"color": _O["orange"], "ls": (0, (1, 1)), "marker": "^"},
    "vrex": {"color": _O["bluish green"], "ls": "-.", "marker": "D"},
    "fishr": {"color": _O["vermillion"], "ls": "--", "marker": "s"},
    "fishr_notcentered": {"color": _O["reddish purple"], "ls": (0, (5, 1)), "marker": "v"},
    "fishr_offdiagonal": {"color": _O["sky blue"], "ls": (0, (3, 1, 1, 1)), "marker": "P"},
    "fishr_all": {"color": _O["black"], "ls": (0, (1, 2)), "marker": "X"},
}
ALGORITHM_COLORS = {name: s["color"] for name, s in ALGORITHM_STYLES.items()}
_UNKNOWN = ({"color": "#555555", "ls": "-", "marker": "."},)

#: Colour, line style and marker of each Colored MNIST domain.
DOMAIN_STYLES: dict[str, dict] = {
    "+80%": {"color": _O["blue"], "ls": "-", "marker": "o"},
    "+90%": {"color": _O["vermillion"], "ls": "--", "marker": "s"},
    "-90%": {"color": _O["bluish green"], "ls": "-.", "marker": "D"},
    "gray": {"color": _O["black"], "ls": (0, (1, 1)), "marker": "^"},
}
DOMAIN_COLORS = {name: s["color"] for name, s in DOMAIN_STYLES.items()}
_CYCLE = [
    {"color": _O[c], "ls": ls, "marker": m}
    for c, ls, m in [
        ("blue", "-", "o"),
        ("vermillion", "--", "s"),
        ("bluish green", "-.", "D"),
        ("orange", (0, (1, 1)), "^"),
        ("reddish purple", (0, (5, 1)), "v"),
        ("sky blue", (0, (3, 1, 1, 1)), "P"),
        ("black", (0, (1, 2)), "X"),
    ]
]
SEQUENTIAL = "viridis"
DIVERGING = "RdBu_r"
#: Grey of reference lines (the anneal step, zero).
REFERENCE = "0.35"

#: The rc parameters of every figure (text in points at the printed size).
RC = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "figure.titlesize": 8,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "axes.linewidth": 0.6,
    "axes.grid": True,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "figure.dpi": 100,
    "figure.constrained_layout.use": True,
    "savefig.dpi": DPI,
    "savefig.bbox": None,
    "pdf.fonttype": 42,
    "mathtext.fontset": "dejavusans",
    "image.cmap": SEQUENTIAL,
}


def algorithm_style(name: str) -> dict:
    """``{"color", "ls", "marker"}`` of an algorithm (dark grey, solid, dot when unknown)."""
    return dict(ALGORITHM_STYLES.get(name, _UNKNOWN[0]))


def algorithm_color(name: str) -> str:
    """Fixed colour of an algorithm (dark grey when unknown)."""
    return algorithm_style(name)["color"]


def domain_style(name: str, index: int = 0) -> dict:
    """``{"color", "ls", "marker"}`` of a domain: fixed for Colored MNIST, else the
    ``index``-th of the palette."""
    return dict(DOMAIN_STYLES.get(name, _CYCLE[index % len(_CYCLE)]))


def domain_color(name: str, index: int = 0) -> str:
    """Fixed colour of a Colored MNIST domain, else the ``index``-th of the palette."""
    return domain_style(name, index)["color"]


@contextlib.contextmanager
def style():
    """Context manager applying the project's matplotlib style (:data:`RC`)."""
    with mpl.rc_context(RC):
        yield


def width_inches(width: str | float) -> float:
    """``"column"`` (3.3 in), ``"full"`` (6.9 in) or a number of inches."""
    if isinstance(width, str):
        if width not in WIDTHS:
            raise ValueError(f"unknown width {width!r}; use 'column', 'full' or inches")
        return WIDTHS[width]
    return float(width)


def new_figure(width: str | float = "column", height: float = 2.4, nrows=1, ncols=1, **kw):
    """``plt.subplots`` under :func:`style`, sized ``width`` × ``height`` inches (call it
    inside ``with style():`` so that the artists drawn next get the style's sizes too)."""
    kw.setdefault("squeeze", False)
    with style():
        return plt.subplots(nrows, ncols, figsize=(width_inches(width), height), **kw)


def text_width(text: str, fontsize: float) -> float:
    """Width in points of ``text`` as matplotlib renders it (mathtext included)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    with style():
        prop = FontProperties(size=fontsize)
        return TextToPath().get_text_width_height_descent(text, prop, ismath="$" in text)[0]


def wrap_text(text: str, width_points: float, fontsize: float) -> str:
    """``text`` broken into lines no wider than ``width_points``, never inside ``$...$``."""
    words = re.findall(r"(?:\$[^$]*\$|[^ \n$])+", text)
    lines: list[str] = []
    for word in words:
        if lines and text_width(f"{lines[-1]} {word}", fontsize) <= width_points:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return "\n".join(lines)


def caption(fig, text: str) -> None:
    """A figure title saying what the figure shows, wrapped to the figure's width."""
    size = RC["figure.titlesize"]
    fig.suptitle(wrap_text(text, 0.96 * 72 * fig.get_figwidth(), size), fontsize=size)


def save_figure(
    fig, path: str | os.PathLike, width: str | float = "column", formats=FORMATS, close=True
) -> list[Path]:
    """Write ``fig`` as ``path`` with each suffix of ``formats`` (PNG at :data:`DPI`, PDF),
    ``width`` inches wide (``"column"``: 3.3, ``"full"``: 6.9; the height scales with it),
    under the project's style; returns the paths written.

    The style is applied here, at save time, not only while drawing: a figure drawn under
    :func:`style` and saved after leaving it keeps its size, resolution and layout.
    """
    target = width_inches(width)
    w, h = fig.get_size_inches()
    stem = Path(path)
    stem = stem.with_suffix("") if stem.suffix.lstrip(".") in FORMATS else stem
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    with style():
        fig.set_size_inches(target, h * target / w)
        for fmt in formats:
            out = stem.with_name(f"{stem.name}.{fmt}")
            fig.savefig(out, format=fmt, dpi=DPI)
            written.append(out)
    if close:
        plt.close(fig)
    return written


def nice_ticks(low: float, high: float, log: bool = False, count: int = 5) -> np.ndarray:
    """Round colour-bar ticks within ``[low, high]``: 1-2-5 × 10^k on a log scale, else
    :class:`matplotlib.ticker.MaxNLocator`'s round steps."""
    if log:
        if low <= 0:
            raise ValueError("log ticks need positive bounds")
        k = np.arange(np.floor(np.log10(low)) - 1, np.ceil(np.log10(high)) + 1)
        for subs in ((1.0,), (1.0, 3.0), (1.0, 2.0, 5.0), (1.0, 1.5, 2, 3, 5, 7)):
            ticks = np.sort([s * 10.0**e for e in k for s in subs])
            ticks = ticks[(ticks >= low * (1 - 1e-9)) & (ticks <= high * (1 + 1e-9))]
            if ticks.size >= 3:
                return ticks
        return np.array([low, high])
    ticks = mpl.ticker.MaxNLocator(count).tick_values(low, high)
    return ticks[(ticks >= low - 1e-12 * abs(high - low)) & (ticks <= high + 1e-12)]


def round_log_ticks(ax, axis: str = "y") -> None:
    """Ticks of a log axis at round values (:func:`nice_ticks`) written plainly (``0.02``,
    not ``2×10^-2``), no minor labels: crowded minor labels overlap on short ranges."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    low, high = ax.get_ylim() if axis == "y" else ax.get_xlim()
    ticks = nice_ticks(low, high, log=True)
    if ticks.size > 6:  # a long range: decades are enough
        ticks = ticks[np.isclose(np.log10(ticks) % 1, 0) | np.isclose(np.log10(ticks) % 1, 1)]
    target.set_major_locator(mpl.ticker.FixedLocator(ticks))
    target.set_major_formatter(mpl.ticker.FuncFormatter(lambda x, _: f"{x:.3g}"))
    target.set_minor_formatter(mpl.ticker.NullFormatter())
    ax.set_ylim(low, high) if axis == "y" else ax.set_xlim(low, high)


__all__ = [
    "ALGORITHM_COLORS",
    "ALGORITHM_NAMES",
    "ALGORITHM_STYLES",
    "DIVERGING",
    "DOMAIN_COLORS",
    "DOMAIN_STYLES",
    "DPI",
    "FORMATS",
    "OKABE_ITO",
    "SEQUENTIAL",
    "WIDTHS",
    "algorithm_color",
    "algorithm_name",
    "algorithm_style",
    "caption",
    "domain_color",
    "domain_style",
    "new_figure",
    "nice_ticks",
    "round_log_ticks",
    "save_figure",
    "style",
    "text_width",
    "width_inches",
    "wrap_text",
]
