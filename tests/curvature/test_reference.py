"""The dense float64 references against closed forms and an independent library (curvlinops)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from landscape.curvature import reference as ref
from landscape.params import select_params
from tests.cases import CASES_BY_LOSS, cases, ids

CLASSIFICATION = cases(loss=("bce", "ce"))


def _case(loss: str, batches: int = 1):
    """The whole-network registry case of ``loss``: one domain of 30 samples in ``batches``."""
    return CASES_BY_LOSS[loss].build_one(batches=batches)[:3]


def test_linear_mse_closed_form():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(40, 4, generator=g, dtype=torch.float64)
    y = torch.randn(40, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(4, 1, bias=False).double()
    expected = 2 / 40 * X.T @ X
    for func in (ref.dense_hessian, ref.dense_ggn):
        torch.testing.assert_close(func(model, nn.MSELoss(), [(X, y)]), expected)
    # per-sample gradients of (w.x - y)^2 are 2 (w.x - y) x
    residual = (X @ model.weight.detach().T - y).reshape(-1, 1)
    torch.testing.assert_close(
        ref.per_sample_gradients(model, nn.MSELoss(), [(X, y)]), 2 * residual * X
    )


@pytest.mark.parametrize("case", CLASSIFICATION, ids=ids(CLASSIFICATION))
def test_against_curvlinops(case):
    """(MSE is left out: curvlinops' empirical Fisher of a mean MSE over C outputs is C times
    the mean of the per-sample gradients' outer products used here.)"""
    from curvlinops import EFLinearOperator, GGNLinearOperator, HessianLinearOperator

    model, loss_func, data, params = case.build_one(batches=2)
    plist = list(select_params(model, params).values())
    D = sum(p.numel() for p in plist)
    eye = torch.eye(D, dtype=torch.float64)
    for cls, func in [
        (HessianLinearOperator, ref.dense_hessian),
        (GGNLinearOperator, ref.dense_ggn),
        (EFLinearOperator, ref.dense_empirical_fisher),
    ]:
        expected = cls(model, loss_func, plist, data) @ eye
        torch.testing.assert_close(func(model, loss_func, data, params), expected)


def test_risk_gradient_and_moments(loss_case):
    model, loss_func, data, _ = loss_case.build_one(batches=3)
    X = torch.cat([b[0] for b in data])
    y = torch.cat([b[1] for b in data])
    with torch.no_grad():
        expected = float(loss_func(model(X), y))
    assert ref.risk(model, loss_func, data) == pytest.approx(expected)
    G = ref.per_sample_gradients(model, loss_func, data)
    assert G.shape == (30, sum(p.numel() for p in model.parameters()))
    model.zero_grad()
    loss_func(model(X[:1]), y[:1]).backward()
    torch.testing.assert_close(G[0], torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    model.zero_grad()
    torch.testing.assert_close(ref.gradient(model, loss_func, data), G.mean(0))
    var = ref.gradient_variance(model, loss_func, data)
    torch.testing.assert_close(var, G.var(0, unbiased=False))
    second = ref.gradient_variance(model, loss_func, data, centered=False)
    torch.testing.assert_close(
        second, torch.diagonal(ref.dense_empirical_fisher(model, loss_func, data))
    )
    # the head's Hessian equals its GGN (logits are linear in the head's weights)
    H = ref.dense_hessian(model, loss_func, data)
    Gn = ref.dense_ggn(model, loss_func, data)
    head = ref.dense_hessian(model, loss_func, data, "classifier")
    torch.testing.assert_close(head, ref.dense_ggn(model, loss_func, data, "classifier"))
    n_head = head.shape[0]
    torch.testing.assert_close(H[-n_head:, -n_head:], head)
    assert (H - Gn).abs().max() > 1e-4  # but not for the whole network


def test_eigenpairs_trace_moments():
    A = torch.diag(torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64))
    evals, evecs = ref.eigenpairs(A, k=2)
    torch.testing.assert_close(evals, torch.tensor([3.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(evecs.abs(), torch.eye(3, dtype=torch.float64)[:, [0, 2]])
    evals, _ = ref.eigenpairs(A, k=1, largest=False)
    assert float(evals[0]) == -1.0
    assert ref.trace(A) == 4.0
    assert ref.spectral_moments(A, [1, 2]) == pytest.approx({1: 4 / 3, 2: 14 / 3})
    with pytest.raises(ValueError, match="unknown curvature 'fisher'"):
        ref.dense_curvature(
            nn.Linear(2, 1),
            nn.MSELoss(),
            [(torch.ones(1, 2), torch.ones(1, 1))],
            curvature="fisher",
        )


def test_reference_leaves_model_unchanged():
    model, loss_func, data = _case("bce")
    model.classifier.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ref.dense_hessian(model, loss_func, data)
    ref.per_sample_gradients(model, loss_func, data)
    assert not model.classifier.weight.requires_grad and not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


class LayerNormNet(nn.Module):
    """Linear -> LayerNorm -> tanh -> Linear: torch.func's second derivatives through the
    LayerNorm are wrong in torch 2.13; the reference Hessian must not be."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.ln = nn.LayerNorm(6)
        self.c = nn.Linear(6, 3)

    def forward(self, x):
        return self.c(torch.tanh(self.ln(self.a(x))))


@pytest.mark.parametrize("make", [LayerNormNet, lambda: CASES_BY_LOSS["ce"].model(torch.float64)])
def test_dense_hessian_against_finite_differences(make):
    """H v equals the central difference (g(θ + εv) - g(θ - εv)) / 2ε of the reference
    gradient (first derivatives only), to O(ε²)."""
    torch.manual_seed(0)
    model = make().double().eval()
    X = torch.randn(12, 4 if isinstance(model, LayerNormNet) else 6, dtype=torch.float64)
    data, loss_func = [(X, torch.randint(0, 3, (12,)))], nn.CrossEntropyLoss()
    theta = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    v = torch.randn(theta.numel(), dtype=torch.float64)

    def gradient_at(point):
        moved = copy.deepcopy(model)
        torch.nn.utils.vector_to_parameters(point, moved.parameters())
        return ref.gradient(moved, loss_func, data)

    eps = 1e-5
    fd = (gradient_at(theta + eps * v) - gradient_at(theta - eps * v)) / (2 * eps)
    Hv = ref.dense_hessian(model, loss_func, data) @ v
    torch.testing.assert_close(Hv, fd, rtol=1e-6, atol=1e-7 * float(fd.abs().max()))
