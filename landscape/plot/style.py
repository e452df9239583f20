"""One visual style for every figure of the project."""

from __future__ import annotations

import contextlib

import matplotlib as mpl
import seaborn as sns

from landscape.names import ALGORITHM_NAMES, algorithm_name

# fixed colours so that an algorithm or a domain looks the same in every figure
ALGORITHM_COLORS = {
    "erm": "#4C72B0",
    "irm": "#8172B3",
    "vrex": "#55A868",
    "fishr": "#C44E52",
    "fishr_notcentered": "#DD8452",
    "fishr_offdiagonal": "#937860",
    "fishr_all": "#DA8BC3",
}
DOMAIN_COLORS = {"+80%": "#1b9e77", "+90%": "#d95f02", "-90%": "#7570b3", "gray": "#666666"}
SEQUENTIAL = "viridis"
DIVERGING = "RdBu_r"


def algorithm_color(name: str) -> str:
    """Fixed colour of an algorithm (dark grey when unknown)."""
    return ALGORITHM_COLORS.get(name, "#333333")


def domain_color(name: str, index: int = 0) -> str:
    """Fixed colour of a Colored MNIST domain, else the ``index``-th of tab10."""
    return DOMAIN_COLORS.get(name, sns.color_palette("tab10")[index % 10])


@contextlib.contextmanager
def style():
    """Context manager applying the project's matplotlib style."""
    with (
        sns.axes_style("whitegrid"),
        mpl.rc_context(
            {
                "figure.dpi": 110,
                "savefig.dpi": 150,
                "savefig.bbox": "tight",
                "axes.titlesize": 11,
                "axes.labelsize": 10,
                "legend.fontsize": 9,
                "font.size": 10,
            }
        ),
    ):
        yield


__all__ = [
    "ALGORITHM_COLORS",
    "ALGORITHM_NAMES",
    "DIVERGING",
    "DOMAIN_COLORS",
    "SEQUENTIAL",
    "algorithm_color",
    "algorithm_name",
    "domain_color",
    "style",
]
