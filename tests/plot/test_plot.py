"""Tests of landscape.plot: every figure is drawn from results loaded from disk (the analyses
are monkeypatched to fail while plotting), with the expected panels and the saved numbers
on them; clear errors for unknown domains, differences, metrics."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import landscape.curvature  # noqa: E402
import landscape.inconsistency  # noqa: E402
import landscape.surface  # noqa: E402
from landscape.alignment import AlignmentTrajectory, alignment_trajectory  # noqa: E402
from landscape.checkpoint import load_checkpoint  # noqa: E402
from landscape.data import build_domains  # noqa: E402
from landscape.domains import pick_domains  # noqa: E402
from landscape.inconsistency import InconsistencyResult, inconsistency_score  # noqa: E402
from landscape.losses import build_loss  # noqa: E402
from landscape.names import NOTATION  # noqa: E402
from landscape.plot import (  # noqa: E402
    plot_alignment,
    plot_pairs,
    plot_pairwise,
    plot_score_parts,
    plot_surface,
    plot_training_curves,
)
from landscape.plot.inconsistency import pair_limits  # noqa: E402
from landscape.plot.style import ALGORITHM_COLORS, algorithm_color, algorithm_name  # noqa: E402
from landscape.surface import SurfaceResult, loss_surface, random_directions  # noqa: E402
from landscape.training import checkpoint_path, read_history, train  # noqa: E402
from tests.plot.checks import assert_publishable  # noqa: E402
from tests.test_alignment import tiny_run_config  # noqa: E402

DOMAINS = ["d0", "d1", "d2", "d3"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny run and, saved next to it, an alignment, two I^eps results and a surface."""
    root = tmp_path_factory.mktemp("plot")
    run = root / "run"
    train(tiny_run_config(), run, progress=False)
    alignment_trajectory(run, pair=["d0", "d1"], progress=False).save(root / "alignment")
    for algo in ("erm", "fishr"):
        model, meta = load_checkpoint(checkpoint_path(run, algo, 0, 6))
        domains = build_domains(meta["data"])
        res = inconsistency_score(
            model, build_loss("bce"), pick_domains(domains, ["d0", "d1", "d2"]), 0.01,
            params="classifier", method="dense", remedy="top-k", k=3, progress=False,
        )  # fmt: skip
        res.save(root / f"score_{algo}")
    dirs = random_directions(model, seed=0)
    loss_surface(model, build_loss("bce"), domains, dirs, grid=(-1.0, 1.0, 5),
                 progress=False).save(root / "surface")  # fmt: skip
    return root


@pytest.fixture(autouse=True)
def no_recompute(monkeypatch):
    """Plotting must only read results: any analysis called while plotting fails the test."""

    def fail(*args, **kwargs):
        raise AssertionError("a plot recomputed an analysis")

    for module, name in [
        (landscape.inconsistency, "inconsistency_score"),
        (landscape.surface, "loss_surface"),
        (landscape.curvature, "compare_domains"),
        (landscape.curvature, "gradient_variance"),
        (landscape.curvature, "hessian_diagonal"),
    ]:
        monkeypatch.setattr(module, name, fail)
    yield
    plt.close("all")


def column(run, algo, restart, name) -> np.ndarray:
    return np.array(
        [r[name] for r in read_history(run / algo / f"restart_{restart}" / "history.csv")]
    )


def lines_by_label(ax) -> dict:
    return {
        line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")
    }


# ----------------------------------------------------------------------------- training


def test_training_curves_one_panel_per_domain_mean_over_restarts(saved):
    run = saved / "run"
    fig, axes = plot_training_curves(run)
    assert axes.shape == (1, 4)
    assert [ax.get_title() for ax in axes[0]] == [f"domain {d}" for d in DOMAINS]
    assert_publishable(fig)
    for ax, domain in zip(axes[0], DOMAINS, strict=True):
        lines = lines_by_label(ax)
        assert set(lines) == {"ERM", "Fishr"}
        for algo, label in (("erm", "ERM"), ("fishr", "Fishr")):
            values = np.stack([column(run, algo, k, f"acc/{domain}") for k in (0, 1)])
            # the steps that evaluate the domain (a test domain: every eval_every steps, the
            # checkpoints, the last two rows; NaN elsewhere, not drawn)
            evaluated = np.isfinite(values).all(0)
            assert evaluated[0] and evaluated[-2:].all()
            np.testing.assert_allclose(lines[label].get_ydata(), 100 * values.mean(0)[evaluated])
            assert lines[label].get_xdata().tolist() == np.arange(7)[evaluated].tolist()
        # the anneal step's dotted line
        assert any(
            np.allclose(line.get_xdata(), 3)
            for line in ax.get_lines()
            if line.get_linestyle() == ":"
        )
    assert axes[0, 0].get_ylabel() == "accuracy (%)"


def test_training_curves_draw_no_band_for_a_single_restart(saved, tmp_path):
    """A band of ± one std needs at least two restarts: one restart draws the line alone."""
    import shutil

    fig, axes = plot_training_curves(saved / "run")
    assert all(len(ax.collections) == 2 for ax in axes[0])  # ERM and Fishr bands
    run = tmp_path / "run"
    shutil.copytree(saved / "run", run)
    shutil.rmtree(run / "erm" / "restart_1")  # ERM: one restart left
    fig, axes = plot_training_curves(run)
    for ax in axes[0]:
        assert len(ax.collections) == 1  # Fishr's band only
        assert set(lines_by_label(ax)) == {"ERM", "Fishr"}


def test_training_curves_subset_and_loss(saved):
    run = saved / "run"
    fig, axes = plot_training_curves(run, algorithms=["fishr"], domains=["d2"], metric="loss")
    assert axes.shape == (1, 1)
    (line,) = lines_by_label(axes[0, 0]).values()
    assert line.get_label() == "Fishr"
    expected = (column(run, "fishr", 0, "loss/d2") + column(run, "fishr", 1, "loss/d2")) / 2
    np.testing.assert_allclose(line.get_ydata(), expected[np.isfinite(expected)])  # evaluated
    assert axes[0, 0].get_ylabel() == "loss"


def test_training_curves_errors(saved, tmp_path):
    run = saved / "run"
    with pytest.raises(ValueError, match=r"unknown domain 'gray'; available: d0, d1, d2, d3"):
        plot_training_curves(run, domains=["d0", "gray"])
    with pytest.raises(ValueError, match=r"unknown metric 'nll'; use 'acc' or 'loss'"):
        plot_training_curves(run, metric="nll")
    with pytest.raises(FileNotFoundError, match=r"no finished history of 'irm'"):
        plot_training_curves(run, algorithms=["irm"])
    with pytest.raises(FileNotFoundError, match=r"is not a run folder"):
        plot_training_curves(tmp_path)


# ---------------------------------------------------------------------------- alignment


def test_alignment_from_saved_trajectory(saved):
    traj = AlignmentTrajectory.load(saved / "alignment")
    fig, axes = plot_alignment(traj)
    assert axes.shape == (2, 2)
    # each quantity on an axis of its own (no rescaling onto another), all log scales
    fields = ["variance_distance", "diagonal_distance", "variance_cosine", "diagonal_cosine"]
    for ax, field in zip(axes.flat, fields, strict=True):
        lines = lines_by_label(ax)
        assert list(lines) == ["ERM", "Fishr"]  # display names, in the table's order
        for algo, label in (("erm", "ERM"), ("fishr", "Fishr")):
            values = getattr(traj, field)[algo]
            expected = values.mean(0) if "distance" in field else (1 - values).mean(0)
            np.testing.assert_allclose(lines[label].get_ydata(), expected)
        assert ax.get_yscale() == "log"
        assert any(np.allclose(line.get_xdata(), 3) for line in ax.get_lines())  # anneal
    line = lines_by_label(axes[0, 0])["Fishr"]
    assert line.get_xdata().tolist() == [0, 2, 4, 6]
    assert line.get_color() == ALGORITHM_COLORS["fishr"]
    # two restarts: a band from the smallest to the largest
    (band, _) = axes[0, 0].collections
    assert band.get_paths()
    assert_publishable(fig)


def test_alignment_mean_ignores_missing_checkpoints(saved):
    traj = AlignmentTrajectory.load(saved / "alignment")
    traj.variance_distance["erm"][1, 2] = np.nan
    _, axes = plot_alignment(traj)
    y = lines_by_label(axes[0, 0])["ERM"].get_ydata()
    assert y[2] == pytest.approx(traj.variance_distance["erm"][0, 2])
    assert np.isfinite(y).all()


# ------------------------------------------------------------------------ inconsistency


def test_pairwise_heatmap_from_saved_result(saved):
    res = InconsistencyResult.load(saved / "score_fishr")
    fig, ax = plot_pairwise(res)
    assert len(fig.axes) == 2  # heatmap + colour bar
    image = ax.get_images()[0].get_array()
    off = ~np.eye(3, dtype=bool)
    np.testing.assert_allclose(image[off], res.values[0][off])
    assert image.mask.tolist() == np.eye(3, dtype=bool).tolist()  # the diagonal is eps
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 9 and texts[1] == f"{res.values[0][0, 1]:.2g}"
    assert texts[0] == NOTATION["epsilon"]
    a, b = res.pair
    (rect,) = ax.patches
    assert rect.get_xy() == (res.domains.index(b) - 0.5, res.domains.index(a) - 0.5)
    assert [t.get_text() for t in ax.get_xticklabels()] == res.domains
    assert_publishable(fig)
    # drawn into a given axis
    fig2, axes2 = plt.subplots(1, 2)
    f, a2 = plot_pairwise(res, ax=axes2[1])
    assert f is fig2 and a2 is axes2[1] and len(axes2[1].get_images()) == 1


def test_pairs_share_one_colour_scale(saved):
    results = {a: InconsistencyResult.load(saved / f"score_{a}") for a in ("fishr", "erm")}
    fig, axes = plot_pairs(results, kind="head")
    assert [ax.get_title() for ax in axes[0]] == ["ERM", "Fishr"]  # the table's order
    off = ~np.eye(3, dtype=bool)
    cells = np.concatenate([r.values[0][off] for r in results.values()])
    for ax in axes[0]:
        norm = ax.get_images()[0].norm
        assert (norm.vmin, norm.vmax) == pytest.approx((cells.min(), cells.max()))
    assert pair_limits(results.values()) == pytest.approx((cells.min(), cells.max()))
    assert len(fig.axes) == 3  # one colour bar for both
    assert_publishable(fig)


def test_score_parts_from_saved_results(saved):
    results = {a: InconsistencyResult.load(saved / f"score_{a}") for a in ("fishr", "erm")}
    fig, axes = plot_score_parts(results, kind="head")
    parts, check = axes
    bars = parts.patches
    assert len(bars) == 4  # risk gap and curvature term per model
    for k, res in enumerate([results["erm"], results["fishr"]]):  # ERM first: the table
        i, j = res.domains.index(res.pair[0]), res.domains.index(res.pair[1])
        assert bars[k].get_height() == pytest.approx(res.risk_gap[i, j])
        assert bars[2 + k].get_height() == pytest.approx(res.curvature_term[0, i, j])
        # stacked: the risk gap plus the curvature term is the score
        assert bars[k].get_height() + bars[2 + k].get_height() == pytest.approx(res.score)
        # the empirical check sits on its own axis, beside the quadratic score
        empirical = float(np.asarray(res.check["empirical_score"]).reshape(-1)[0])
        assert check.patches[k].get_height() == pytest.approx(res.score)
        assert check.patches[2 + k].get_height() == pytest.approx(empirical)
    assert [t.get_text() for t in parts.get_xticklabels()] == ["ERM", "Fishr"]
    assert check.get_yscale() == "log"
    assert "true losses" in fig.get_suptitle()
    assert_publishable(fig)
    with pytest.raises(ValueError, match="no result to draw"):
        plot_score_parts({})


@pytest.fixture(scope="module")
def several_epsilon(tmp_path_factory):
    """A saved I^eps result for two values of eps (computed before any plot is drawn)."""
    from tests.cases import make_binary_domains, make_mlp

    res = inconsistency_score(
        make_mlp(), build_loss("bce"), make_binary_domains(3), [1e-3, 1e3],
        params="classifier", check=False, progress=False,
    )  # fmt: skip
    return res.save(tmp_path_factory.mktemp("several") / "score")


def test_inconsistency_plots_for_each_of_several_epsilon(several_epsilon):
    res = InconsistencyResult.load(several_epsilon)
    assert len(res.epsilon) == 2
    for index in range(2):
        a, b = res.winner(index)
        i, j = res.domains.index(a), res.domains.index(b)
        _, ax = plot_pairwise(res, epsilon_index=index)
        (rect,) = ax.patches
        assert rect.get_xy() == (j - 0.5, i - 0.5)
        np.testing.assert_allclose(ax.get_images()[0].get_array(), res.values[index])
        _, axes = plot_score_parts({"mlp": res}, epsilon_index=index)
        risk, curv = axes[0].patches
        assert risk.get_height() == pytest.approx(res.risk_gap[i, j])
        assert curv.get_height() == pytest.approx(res.curvature_term[index, i, j])


# ------------------------------------------------------------------------------ surface


def test_surface_panels_and_shared_scale(saved):
    res = SurfaceResult.load(saved / "surface")
    fig, axes = plot_surface(res)
    assert len(axes) == 5  # four domains + "d1 - d0"
    assert axes[-1].get_title() == "d1 − d0"
    assert [ax.get_title() for ax in axes[:4]] == [f"loss on {d}" for d in DOMAINS]
    # one colour scale: every domain's contour levels are the same, spanning all domains
    levels = [ax.collections[0].levels for ax in axes[:4]]
    for lv in levels[1:]:
        np.testing.assert_array_equal(lv, levels[0])
    stack = np.stack([res.losses[d] for d in DOMAINS])
    assert levels[0][0] == pytest.approx(stack.min())
    assert levels[0][-1] == pytest.approx(stack.max())
    assert all(ax.get_aspect() == 1.0 for ax in axes)  # equal aspect
    # the difference: symmetric around zero
    diff = np.asarray(res.differences["d1 - d0"])
    dl = axes[-1].collections[0].levels
    assert dl[0] == pytest.approx(-np.abs(diff).max()) and dl[-1] == pytest.approx(-dl[0])
    assert_publishable(fig)


def test_surface_choices(saved):
    res = SurfaceResult.load(saved / "surface")
    fig, axes = plot_surface(res, domains=["d2", "d0"], difference="d2 - d3")
    assert len(axes) == 3 and axes[-1].get_title() == "d2 − d3"
    fig, axes = plot_surface(res, domains=["d3"], difference="auto")
    assert len(axes) == 1
    fig, axes = plot_surface(res, value="accuracy", difference=None, log=True)
    assert len(axes) == 4 and axes[0].get_title() == "accuracy on d0"
    levels = axes[0].collections[0].levels
    acc = np.stack([res.accuracies[d] for d in DOMAINS])
    assert levels[0] == pytest.approx(acc.min())  # never log for accuracies


def test_surface_errors(saved):
    res = SurfaceResult.load(saved / "surface")
    with pytest.raises(ValueError, match=r"unknown domain 'gray'; available: d0, d1, d2, d3"):
        plot_surface(res, domains=["d0", "gray"])
    with pytest.raises(ValueError, match=r"no difference 'd0 - d9'; available: d1 - d0, "):
        plot_surface(res, difference="d0 - d9")
    with pytest.raises(ValueError, match=r"unknown value 'risk'; use 'loss' or 'accuracy'"):
        plot_surface(res, value="risk")
    res.accuracies = {}
    with pytest.raises(ValueError, match="the result has no accuracy values"):
        plot_surface(res, value="accuracy")


def test_style_helpers():
    assert algorithm_name("vrex") == "V-REx" and algorithm_name("mine") == "mine"
    assert algorithm_color("fishr") == ALGORITHM_COLORS["fishr"]
    assert algorithm_color("mine") == "#555555"
