"""Curvature diagonals (landscape/curvature/diagonals.py) against dense float64 references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape import curvature as C
from landscape.curvature import reference as ref
from landscape.models import colored_mnist_mlp
from tests.curvature._common import (
    build_small,
    close,
    small_case,
)


def test_head_of_colored_mnist_mlp_exact_equals_ggn():
    """docs/method.md section 3: the logits are linear in the head, so its Hessian is its GGN."""
    torch.manual_seed(0)
    model = colored_mnist_mlp().double().eval()
    g = torch.Generator().manual_seed(0)
    X = torch.rand(64, 2, 14, 14, generator=g, dtype=torch.float64)
    y = (torch.rand(64, 1, generator=g) < 0.5).double()
    domains = {"+90%": [(X, y)]}
    exact = C.hessian_diagonal(model, nn.BCEWithLogitsLoss(), domains, "classifier", "exact")
    ggn = C.hessian_diagonal(model, nn.BCEWithLogitsLoss(), domains, "classifier", "ggn")
    assert exact.diagonal["+90%"].shape == (391,)
    assert np.abs(exact.diagonal["+90%"]).max() > 1e-4
    close(exact.diagonal["+90%"], ggn.diagonal["+90%"], 1e-10, 1e-14)


def test_smooth_network_exact_differs_from_ggn_except_on_the_head():
    """With tanh the residual term changes the diagonal of the hidden layers (a test that can
    fail); the head's diagonals still coincide."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double().eval()
    g = torch.Generator().manual_seed(0)
    domains = {
        "a": [
            (
                torch.randn(40, 4, generator=g, dtype=torch.float64),
                torch.randint(0, 2, (40,), generator=g),
            )
        ]
    }
    loss_func = nn.CrossEntropyLoss()
    for params, same in ((None, False), ("2", True)):
        exact = C.hessian_diagonal(model, loss_func, domains, params, "exact").diagonal["a"]
        ggn = C.hessian_diagonal(model, loss_func, domains, params, "ggn").diagonal["a"]
        H = ref.dense_hessian(model, loss_func, domains["a"], params)
        close(exact, torch.diagonal(H).numpy())
        assert np.allclose(exact, ggn, rtol=1e-10, atol=1e-14) == same


def test_fisher_mc_converges_to_ggn_diagonal():
    model, loss_func, domains = small_case("bce")
    data = {"d1": domains["d1"]}
    ggn = torch.diagonal(ref.dense_ggn(model, loss_func, data["d1"], "classifier")).numpy()
    errors = []
    for mc in (20, 1280):
        rmse = []
        for seed in (0, 1, 2):
            d = C.hessian_diagonal(
                model, loss_func, data, "classifier", "fisher_mc", mc_samples=mc, seed=seed
            )
            rmse.append(np.sqrt(np.mean((d.diagonal["d1"] - ggn) ** 2)))
        again = C.hessian_diagonal(
            model, loss_func, data, "classifier", "fisher_mc", mc_samples=mc, seed=2
        )
        close(d.diagonal["d1"], again.diagonal["d1"], 0, 0)  # seeded
        assert d.settings["seed"] == 2 and d.settings["mc_samples"] == mc
        errors.append(np.mean(rmse))
    assert errors[0] / errors[1] > 4  # 64x the samples: ~8x smaller


def test_default_diagonal_works_where_backpack_lacks_a_module(dtype, monkeypatch):
    """Before: 'BackPACK cannot handle this model ...; use method='hutchinson''. Now the exact
    diagonal by rows of products (small D), the exact GGN by torch.func, and Hutchinson with
    its standard error beyond ROWS_MAX_DIM; the result says which ran."""
    from landscape.curvature import diagonals
    from tests.curvature.test_variance import group_norm_cnn, image_domains

    model, loss_func, domains = group_norm_cnn(dtype), nn.CrossEntropyLoss(), image_domains(dtype)
    model64 = group_norm_cnn(torch.float64)
    data64 = [(X.double(), y) for X, y in image_domains(torch.float64)["a"]]
    H = torch.diagonal(ref.dense_hessian(model64, loss_func, data64)).numpy()
    G = torch.diagonal(ref.dense_ggn(model64, loss_func, data64)).numpy()
    rtol = 1e-9 if dtype == torch.float64 else 1e-3
    atol = rtol * np.abs(H).max()
    auto = C.hessian_diagonal(model, loss_func, domains)
    assert {k: auto.settings[k] for k in ("method", "backend", "exact")} == {
        "method": "exact",
        "backend": "products",
        "exact": True,
    }
    assert auto.num_products["a"] == H.size
    close(auto.diagonal["a"], H, rtol, atol)
    ggn = C.hessian_diagonal(model, loss_func, domains, method="ggn")
    assert ggn.settings["backend"] == "torch.func" and ggn.settings["exact"]
    close(ggn.diagonal["a"], G, rtol, rtol * np.abs(G).max())
    mc = C.hessian_diagonal(model, loss_func, domains, method="fisher_mc")
    assert mc.settings["backend"] == "torch.func" and not mc.settings["exact"]
    monkeypatch.setattr(diagonals, "ROWS_MAX_DIM", 10)
    with pytest.raises(ValueError, match=r"cannot run: .*GroupNorm.*use method='hutchinson'"):
        C.hessian_diagonal(model, loss_func, domains, method="exact")
    hut = C.hessian_diagonal(model, loss_func, domains, num_probes=64)
    assert hut.settings["method"] == "hutchinson" and not hut.settings["exact"]
    err, se = hut.diagonal["a"] - H, hut.standard_error["a"]
    assert np.mean(np.abs(err) <= 4 * se + atol) > 0.95


def test_ggn_by_torch_func_matches_backpack(loss_case):
    """The torch.func GGN diagonal (any model) agrees with BackPACK's where both apply."""
    from landscape.curvature._setup import prepare
    from landscape.curvature.diagonals import DiagonalMethod, DiagonalOptions, _diagonal_func

    model, loss_func, domains, _ = build_small(loss_case)
    backpack = C.hessian_diagonal(model, loss_func, domains, method="ggn")
    assert backpack.settings["backend"] == "backpack"
    setup = prepare(model, loss_func, domains, None, "test")
    for name, data in domains.items():
        ggn = _diagonal_func(setup, data, DiagonalMethod.GGN, DiagonalOptions())
        close(ggn.numpy(), backpack.diagonal[name])
