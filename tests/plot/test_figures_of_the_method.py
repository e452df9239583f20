"""The figures of the method (issue 12 part 2): their computing functions against closed
forms / brute force, the data they draw, and the text checks."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from landscape.plot.clouds import (  # noqa: E402
    GradientCloud,
    covariance_ellipse,
    difference_directions,
    gradient_cloud,
    plot_gradient_clouds,
)
from tests.cases import make_binary_domains  # noqa: E402
from tests.plot.checks import assert_publishable  # noqa: E402


def test_covariance_ellipse_boundary_is_the_k_std_level_set():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(500, 2)) @ np.array([[2.0, 0.0], [1.2, 0.5]]) + [3.0, -1.0]
    centre, width, height, angle = covariance_ellipse(points, n_std=2.0)
    np.testing.assert_allclose(centre, points.mean(0))
    cov = np.cov(points.T, bias=True)
    t = np.linspace(0, 2 * np.pi, 50)
    r = np.radians(angle)
    rot = np.array([[np.cos(r), -np.sin(r)], [np.sin(r), np.cos(r)]])
    boundary = (rot @ np.stack([width / 2 * np.cos(t), height / 2 * np.sin(t)])).T
    mahalanobis = np.einsum("ni,ij,nj->n", boundary, np.linalg.inv(cov), boundary)
    np.testing.assert_allclose(mahalanobis, 4.0, rtol=1e-9)


def test_gradient_cloud_against_the_closed_form_of_a_logistic_model():
    """For R = BCE(w·x + b), g_i = (σ(w·x_i + b) − y_i) [x_i, 1]."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1).double()
    domains = make_binary_domains(2, n=50, dim=4)
    cloud = gradient_cloud(model, torch.nn.BCEWithLogitsLoss(), domains, ["d0", "d1"],
                           params=None)  # fmt: skip
    grads = {}
    for d, [(X, y)] in domains.items():
        with torch.no_grad():
            r = torch.sigmoid(model(X)) - y
        grads[d] = torch.cat([r * X, r], dim=1).numpy()
    cov = {d: np.cov(g.T, bias=True) for d, g in grads.items()}
    values = np.linalg.eigvalsh(cov["d1"] - cov["d0"])
    expected = values[np.argsort(-np.abs(values))[:2]]
    np.testing.assert_allclose(cloud.eigenvalues, expected, rtol=1e-8, atol=1e-12)
    # the projections: up to the sign of each direction
    directions, _ = difference_directions(grads, ["d0", "d1"])
    for d in ("d0", "d1"):
        ours, brute = np.asarray(cloud.points[d]), grads[d] @ directions
        for k in range(2):
            sign = np.sign(ours[:, k] @ brute[:, k]) or 1.0
            np.testing.assert_allclose(ours[:, k], sign * brute[:, k], atol=1e-10)
    assert cloud.num_params == 5 and cloud.num_samples == {"d0": 50, "d1": 50}


def test_gradient_clouds_figure_draws_every_point_and_its_ellipse(tmp_path):
    rng = np.random.default_rng(1)
    clouds = {
        algo: GradientCloud(points={"+80%": rng.normal(size=(300, 2)) * s,
                                    "+90%": rng.normal(size=(300, 2)) * [1.0, 0.5]},
                            pair=["+80%", "+90%"], eigenvalues=np.ones(2), num_params=391)
        for algo, s in (("fishr", 1.1), ("erm", 3.0))
    }  # fmt: skip
    clouds["erm"].save(tmp_path / "erm")
    clouds["erm"] = GradientCloud.load(tmp_path / "erm")
    fig, axes = plot_gradient_clouds(clouds)
    assert [ax.get_title() for ax in axes[0]] == ["ERM", "Fishr"]
    for ax, algo in zip(axes[0], ("erm", "fishr"), strict=True):
        ellipses = ax.patches
        assert len(ellipses) == 2
        for ellipse, domain in zip(ellipses, ("+80%", "+90%"), strict=True):
            centre, w, h, angle = covariance_ellipse(clouds[algo].points[domain])
            assert ellipse.get_width() == pytest.approx(w)
            assert ellipse.get_height() == pytest.approx(h)
        assert len(ax.collections) == 2  # one scatter per domain
    assert_publishable(fig)


def test_variance_hessian_figure_draws_each_parameter_and_the_cosine():
    from landscape.curvature import compare_domains
    from landscape.plot.premise import plot_variance_hessian
    from tests.cases import make_mlp

    model, loss = make_mlp(), torch.nn.BCEWithLogitsLoss()
    domains = make_binary_domains(2, n=40)
    comparisons = {a: compare_domains(model, loss, domains, params="classifier", k=0)
                   for a in ("fishr", "erm")}  # fmt: skip
    fig, axes = plot_variance_hessian(comparisons)
    assert [ax.get_title() for ax in axes[0]] == ["ERM", "Fishr"]
    res = comparisons["erm"]
    for scatter, text, domain in zip(axes[0, 0].collections, axes[0, 0].get_legend().texts,
                                     res.domains, strict=True):  # fmt: skip
        v, h = np.asarray(res.variance[domain]), np.asarray(res.diagonal[domain])
        keep = (v > 0) & (h > 0)
        np.testing.assert_allclose(scatter.get_offsets(), np.stack([h[keep], v[keep]], 1))
        cosine = v @ h / np.linalg.norm(v) / np.linalg.norm(h)  # brute force
        assert text.get_text() == f"{domain}: cos = {cosine:.3f}"
    assert_publishable(fig)


@pytest.fixture(scope="module")
def patchwork_examples():
    from landscape.plot.patchwork import patchwork_example

    return {kind: patchwork_example(kind, epsilon=0.1) for kind in ("patchwork", "consistent")}


def test_patchwork_example_against_closed_forms_and_brute_force(patchwork_examples):
    from landscape.plot.patchwork import risk_grid, two_domain_regression

    for kind, ex in patchwork_examples.items():
        model, domains = two_domain_regression(kind)
        theta = ex.theta_star
        # θ* minimises the average risk: the average gradient vanishes
        grads = [2 * X.numpy().T @ (X.numpy() @ theta - y.numpy().ravel()) / len(X)
                 for [(X, y)] in domains.values()]  # fmt: skip
        np.testing.assert_allclose(sum(grads), 0.0, atol=1e-12)
        # the quadratic score: R_B − R_A + ε λ_max(H_A⁻¹ H_B), H_e = 2 XᵀX / n
        H = {d: 2 * X.numpy().T @ X.numpy() / len(X) for d, [(X, _)] in domains.items()}
        lam = np.linalg.eigvals(np.linalg.solve(H["A"], H["B"])).real.max()
        expected = ex.risks["B"] - ex.risks["A"] + 0.1 * lam
        assert ex.score == pytest.approx(expected, rel=1e-8)
        # the line check's point: R_A has moved by ε there, and R_B − R_A(θ*) is its value
        at = risk_grid(domains, [ex.line_point[0]], [ex.line_point[1]])
        assert abs(at["A"][0, 0] - ex.risks["A"]) == pytest.approx(0.1, rel=1e-4)
        assert at["B"][0, 0] - ex.risks["A"] == pytest.approx(ex.line_value, rel=1e-8)
        # the ascent on the true losses against a brute-force maximum: R_B is convex, so its
        # maximum on the ellipse {R_A <= R_A(θ*) + ε} lies on the boundary, sampled densely
        X, y = (t.numpy() for t in domains["A"][0])
        S = X.T @ X / len(X)
        centre = np.linalg.solve(S, X.T @ y.ravel() / len(X))
        floor = float(((X @ centre - y.ravel()) ** 2).mean())
        angles = np.linspace(0, 2 * np.pi, 20000, endpoint=False)
        circle = np.stack([np.cos(angles), np.sin(angles)])
        radius = np.sqrt(ex.risks["A"] + 0.1 - floor)
        boundary = centre[:, None] + radius * np.linalg.solve(np.linalg.cholesky(S).T, circle)
        on = {d: ((X.numpy() @ boundary - y.numpy()) ** 2).mean(0)
              for d, [(X, y)] in domains.items()}  # fmt: skip
        assert on["A"] == pytest.approx(ex.risks["A"] + 0.1, rel=1e-9)
        brute = on["B"].max() - ex.risks["A"]
        assert ex.search_value == pytest.approx(brute, rel=1e-3)
    # the picture's message: the patchwork is far more inconsistent than the consistent one
    assert patchwork_examples["patchwork"].search_value > 20 * patchwork_examples[
        "consistent"].search_value  # fmt: skip


def test_patchwork_figure(patchwork_examples, tmp_path):
    from landscape.plot.patchwork import PatchworkExample, plot_patchwork

    patchwork_examples["consistent"].save(tmp_path / "c")
    loaded = {**patchwork_examples, "consistent": PatchworkExample.load(tmp_path / "c")}
    fig, axes = plot_patchwork(loaded)
    for ax, ex in zip(axes[0], loaded.values(), strict=True):
        assert f"{ex.score:.3g}" in ax.get_title() and f"{ex.search_value:.3g}" in ax.get_title()
        star, diamond = [line for line in ax.get_lines() if line.get_marker() in ("*", "D")]
        np.testing.assert_allclose(star.get_xydata()[0], ex.theta_star)
        np.testing.assert_allclose(diamond.get_xydata()[0], ex.line_point)
        assert ax.get_aspect() == 1.0
    assert_publishable(fig)


def test_score_trajectory_equals_the_score_of_each_checkpoint(tmp_path):
    from landscape.checkpoint import load_checkpoint
    from landscape.data import build_domains
    from landscape.domains import pick_domains
    from landscape.inconsistency import inconsistency_score
    from landscape.losses import build_loss
    from landscape.plot.score_trajectory import (
        ScoreTrajectory,
        plot_score_trajectory,
        score_trajectory,
    )
    from landscape.runs import RunFolder
    from landscape.training import train
    from tests.test_alignment import tiny_run_config

    run = RunFolder(tmp_path / "run")
    config = tiny_run_config()
    config.restarts = 1
    train(config, run.root, progress=False)
    _, meta = load_checkpoint(run.final_checkpoint("erm"))
    domains = pick_domains(build_domains(meta["data"]), ["d0", "d1"])
    loss = build_loss("bce")
    traj = score_trajectory(run.root, ["fishr", "erm"], loss, domains, 0.01, k=3)
    traj.save(tmp_path / "traj")
    traj = ScoreTrajectory.load(tmp_path / "traj")
    assert traj.steps["erm"].tolist() == run.checkpoint_steps("erm", 0)
    assert traj.anneal_step == config.anneal_step
    for algo in ("erm", "fishr"):
        for index in (0, len(traj.steps[algo]) - 1):  # first and last checkpoints
            path = run.checkpoint_path(algo, 0, int(traj.steps[algo][index]))
            res = inconsistency_score(load_checkpoint(path)[0], loss, domains, 0.01,
                                      params="classifier", method="dense", remedy="top-k",
                                      k=3, progress=False)  # fmt: skip
            a, b = res.winner(0)
            i, j = res.domains.index(a), res.domains.index(b)
            assert traj.score[algo][index] == pytest.approx(float(res.scores[0]), rel=1e-9)
            assert traj.risk_gap[algo][index] == pytest.approx(float(res.risk_gap[i, j]))
            assert traj.risk_gap[algo][index] + traj.curvature_term[algo][index] == (
                pytest.approx(traj.score[algo][index]))  # fmt: skip
    fig, axes = plot_score_trajectory(traj)
    lines = {line.get_label(): line for line in axes[0, 0].get_lines()}
    np.testing.assert_allclose(lines["Fishr"].get_ydata(), traj.score["fishr"])
    assert any(np.allclose(line.get_xdata(), config.anneal_step) for line in axes[1, 1].get_lines())
    assert_publishable(fig)
