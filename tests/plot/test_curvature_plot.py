"""``plot_curvature``: one line per domain for the spectra; other results are refused."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from landscape.curvature.results import EigenpairsResult, TraceResult  # noqa: E402
from landscape.plot import plot_curvature  # noqa: E402
from landscape.plot.curvature import can_plot_curvature  # noqa: E402

COMMON = {"domains": ["a", "b"], "param_names": ["w"], "param_shapes": [[3]], "loss": "bce",
          "settings": {}}  # fmt: skip


def test_eigenvalues_one_line_per_domain_descending():
    res = EigenpairsResult(
        **COMMON, largest_eigenvalues={"a": np.array([1.0, 3.0, 2.0]), "b": np.array([0.5, 1.0])}
    )
    fig, ax = plot_curvature(res)
    lines = ax.get_lines()
    assert len(lines) == 2
    assert list(lines[0].get_ydata()) == [3.0, 2.0, 1.0]


def test_a_trace_is_refused_in_one_line():
    res = TraceResult(**COMMON, trace={"a": 1.0, "b": 2.0})
    assert not can_plot_curvature(res)
    with pytest.raises(ValueError, match="no curvature figure for a TraceResult"):
        plot_curvature(res)
