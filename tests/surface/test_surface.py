"""Tests for landscape.surface.loss_surface: closed forms, planes, bad inputs, train mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape.models import MLP
from landscape.params import flatten
from landscape.surface import (
    loss_surface,
    make_grid,
)
from landscape.surface.directions import (
    eigen_directions,
    plane_directions,
    random_directions,
    trajectory_directions,
)
from tests.cases import make_binary_domains, make_mlp
from tests.surface.helpers import ConvBN, assert_untouched, snapshot


@pytest.mark.parametrize("first_layer", [False, True], ids=["plain", "first-layer"])
def test_quadratic_loss_gives_half_dthd_on_the_grid(first_layer):
    """Linear model + MSE around its least-squares minimum: R(θ*+Δ) - R* = ½ΔᵀHΔ exactly."""
    g = torch.Generator().manual_seed(0)
    N, dim = 40, 9
    X = torch.randn(N, dim, generator=g, dtype=torch.float64)
    y = X @ torch.randn(dim, 1, generator=g, dtype=torch.float64) + 0.3 * torch.randn(
        N, 1, generator=g, dtype=torch.float64
    )
    model = MLP(dim, [], 1).double().eval()
    Xb = torch.cat([X, torch.ones(N, 1, dtype=torch.float64)], 1)
    sol = torch.linalg.lstsq(Xb, y).solution
    with torch.no_grad():
        model.classifier.weight.copy_(sol[:dim].T)
        model.classifier.bias.copy_(sol[dim])
    H = 2.0 / N * Xb.T @ Xb  # Hessian of the mean squared error
    dirs = random_directions(model, seed=3, include_biases=True)
    D = torch.stack([flatten(dirs.d1), flatten(dirs.d2)], 1)  # [D, 2] in (weight, bias) order
    C = D.T @ H @ D
    alphas, betas = np.linspace(-1, 1, 5), np.linspace(-2, 1.5, 4)
    res = loss_surface(
        model,
        nn.MSELoss(),
        {"e": [(X, y)]},
        dirs,
        grid=(alphas, betas),
        first_layer=first_layer,
        progress=False,
    )
    # every parameter is the classifier's: it runs alone on the flattened inputs
    assert res.settings["path"] == "prefix+" + ("first_layer" if first_layer else "plain")
    r0 = float(nn.MSELoss()(Xb @ sol, y))
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            v = torch.tensor([a, b], dtype=torch.float64)
            assert res.losses["e"][i, j] == pytest.approx(r0 + 0.5 * float(v @ C @ v), rel=1e-12)
    assert res.accuracies == {}  # regression: no accuracy


def test_eigen_directions_give_half_lambda_on_a_quadratic():
    """At the least-squares minimum along unit eigenvectors: R* + ½(λ₁α² + λ₂β²)."""

    g = torch.Generator().manual_seed(1)
    N, dim = 30, 4
    X = torch.randn(N, dim, generator=g, dtype=torch.float64)
    y = torch.randn(N, 1, generator=g, dtype=torch.float64)
    model = MLP(dim, [], 1).double().eval()
    Xb = torch.cat([X, torch.ones(N, 1, dtype=torch.float64)], 1)
    sol = torch.linalg.lstsq(Xb, y).solution
    with torch.no_grad():
        model.classifier.weight.copy_(sol[:dim].T)
        model.classifier.bias.copy_(sol[dim])
    dirs = eigen_directions(model, nn.MSELoss(), {"e": [(X, y)]}, k=2, tol=1e-10)
    lam = torch.linalg.eigvalsh(2.0 / N * Xb.T @ Xb).flip(0)
    np.testing.assert_allclose(dirs.info["eigenvalues"], lam[:2].numpy(), rtol=1e-8)
    res = loss_surface(model, nn.MSELoss(), {"e": [(X, y)]}, dirs, grid=(-1, 1, 3), progress=False)
    r0 = float(nn.MSELoss()(Xb @ sol, y))
    A, B = np.meshgrid(res.alphas, res.betas, indexing="ij")
    expected = r0 + 0.5 * (float(lam[0]) * A**2 + float(lam[1]) * B**2)
    np.testing.assert_allclose(res.losses["e"], expected, rtol=1e-7)


def test_plane_through_three_checkpoints_passes_through_all_three():
    domains = make_binary_domains(2, n=40, dim=10)
    ckpts = [make_mlp(dim=10, seed=s) for s in (1, 2, 3)]
    model = make_mlp(dim=10, seed=9)  # any model of the architecture: the plane fixes the origin
    plane = plane_directions(model, ckpts, labels=["init", "erm", "fishr"])
    (a0, b0), (a1, b1), (a2, b2) = (plane.info["points"][k] for k in ("init", "erm", "fishr"))
    alphas, betas = np.array([a0, a1, a2]), np.array([b0, b1, b2])
    loss_func = nn.BCEWithLogitsLoss()
    res = loss_surface(model, loss_func, domains, plane, grid=(alphas, betas), progress=False)
    for k, ckpt in enumerate(ckpts):
        for name, batches in domains.items():
            X, y = batches[0]
            with torch.no_grad():
                own = float(loss_func(ckpt(X), y))
            assert res.losses[name][k, k] == pytest.approx(own, rel=1e-12)
    assert res.directions["kind"] == "plane"
    assert res.directions["points"]["erm"] == [1.0, 0.0]
    # the default grid covers every checkpoint
    ga, gb = make_grid(None, plane)
    assert ga.min() < min(alphas) and ga.max() > max(alphas)
    assert gb.min() < min(betas) and gb.max() > max(betas)


def test_trajectory_surface_default_grid_covers_the_trajectory():
    model = make_mlp(dim=10)
    ckpts = [make_mlp(dim=10, seed=s) for s in range(4)]
    traj = trajectory_directions(model, ckpts)
    res = loss_surface(
        model,
        nn.BCEWithLogitsLoss(),
        make_binary_domains(1, n=10, dim=10),
        traj,
        grid=None,
        progress=False,
    )
    coords = np.asarray(res.directions["trajectory"])
    assert res.alphas.min() < coords[:, 0].min() and res.alphas.max() > coords[:, 0].max()
    assert res.losses["d0"].shape == (21, 21)


def test_train_mode_is_a_clear_error_and_model_untouched():
    model = ConvBN().double()  # train mode: batch norm and dropout would change behaviour
    data = {"a": (torch.randn(4, 1, 5, 5, dtype=torch.float64), torch.randint(0, 3, (4,)))}
    with pytest.raises(
        ValueError, match=r"'bn' \(BatchNorm2d\) is in training mode.*call model.eval\(\)"
    ):
        loss_surface(model, nn.CrossEntropyLoss(), data, random_directions(model), progress=False)
    # a model with no mode-dependent module may stay in train mode; flags are kept
    mlp = make_mlp(dim=10).train()
    mlp.featurizer[1].bias.requires_grad_(False)
    snap = snapshot(mlp)
    loss_surface(
        mlp,
        nn.BCEWithLogitsLoss(),
        make_binary_domains(1, n=8, dim=10),
        random_directions(mlp, include_biases=True),
        grid=(-1, 1, 2),
        progress=False,
    )
    assert_untouched(mlp, snap)


def test_bad_inputs_get_clear_errors():
    model = make_mlp(dim=10)
    domains = make_binary_domains(1, n=8, dim=10)
    dirs = random_directions(model)
    lf = nn.BCEWithLogitsLoss()
    with pytest.raises(ValueError, match="alpha grid has 0 points; give at least one"):
        loss_surface(model, lf, domains, dirs, grid=(-1, 1, 0), progress=False)
    with pytest.raises(ValueError, match="beta grid has 0 points"):
        loss_surface(model, lf, domains, dirs, grid=([0.0, 1.0], []), progress=False)
    with pytest.raises(ValueError, match="min 1 must be below max -1"):
        make_grid((1, -1, 3))
    with pytest.raises(ValueError, match="NaN or infinite"):
        make_grid(([0.0, np.nan], [0.0]))
    with pytest.raises(ValueError, match="built for another model"):
        loss_surface(
            make_mlp(dim=11), lf, make_binary_domains(1, n=8, dim=11), dirs, progress=False
        )
    with pytest.raises(TypeError, match="directions must be a landscape Directions"):
        loss_surface(model, lf, domains, {"x": 1}, progress=False)
    with pytest.raises(ValueError, match="unknown batch_norm 'fresh'"):
        loss_surface(model, lf, domains, dirs, batch_norm="fresh", progress=False)
    with pytest.raises(ValueError, match="subsample must be a positive integer"):
        loss_surface(model, lf, domains, dirs, subsample=0, progress=False)
    with pytest.raises(ValueError, match="loss reduction 'none' is not supported"):
        loss_surface(model, nn.BCEWithLogitsLoss(reduction="none"), domains, dirs, progress=False)
    with pytest.raises(ValueError, match="domain 'd0' is empty"):
        loss_surface(
            model, lf, {"d0": [(torch.zeros(0, 10), torch.zeros(0, 1))]}, dirs, progress=False
        )
    X, y = domains["d0"][0]
    bad = {"d0": [(X.clone().fill_(float("nan")), y)]}
    with pytest.raises(ValueError, match="domain 'd0': batch 0 has NaN or infinite values in"):
        loss_surface(model, lf, bad, dirs, grid=(-1, 1, 2), progress=False)


class _SqrtHead(nn.Module):
    """Finite at its weights (all positive), NaN where a displacement makes one negative."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.full((dim, 1), 0.01, dtype=torch.float64))

    def forward(self, x):
        return x @ self.weight.sqrt()


def test_a_nan_loss_at_a_grid_point_names_the_domain_and_the_point():
    model = _SqrtHead(10).eval()
    domains = make_binary_domains(1, n=8, dim=10)
    dirs = random_directions(model, normalization="none", seed=0)
    with pytest.raises(ValueError, match=r"the loss of domain 'd0' is NaN at \(alpha, beta\)"):
        loss_surface(model, nn.BCEWithLogitsLoss(), domains, dirs, grid=(-1, 1, 3), progress=False)
