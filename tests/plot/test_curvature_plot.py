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


def test_spectral_densities_head_and_network_overlaid_per_domain():
    import matplotlib.pyplot as plt
    import torch

    from landscape.curvature import spectral_density
    from landscape.plot.curvature import plot_spectral_densities
    from tests.cases import make_binary_domains, make_mlp
    from tests.plot.checks import assert_publishable

    model, loss = make_mlp(), torch.nn.BCEWithLogitsLoss()
    domains = make_binary_domains(2, n=30)
    results = {
        algo: {kind: spectral_density(model, loss, domains, params=params, num_probes=2,
                                      lanczos_steps=8, num_points=64)
               for kind, params in (("head", "classifier"), ("network", None))}
        for algo in ("fishr", "erm")
    }  # fmt: skip
    fig, axes = plot_spectral_densities(results, floor=1e-6)
    assert axes.shape == (2, 2)
    titles = [ax.get_title() for ax in axes[:, 0]]
    assert titles == ["ERM, head (last layer)", "Fishr, head (last layer)"]
    res = results["erm"]["network"]
    peak = max(res.density[d].max() for d in res.domains)
    for line, domain in zip(axes[0, 1].get_lines(), res.domains, strict=True):
        np.testing.assert_allclose(line.get_xdata(), res.grid[domain])
        np.testing.assert_allclose(line.get_ydata(), np.maximum(res.density[domain], 1e-6 * peak))
    assert all(ax.get_yscale() == "log" for ax in axes.flat)
    assert_publishable(fig)
    plt.close("all")
