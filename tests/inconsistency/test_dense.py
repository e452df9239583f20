"""Dense backend: against ``scipy.linalg.eigh(H_B, H_A)`` in float64 and ellipsoid sampling."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

from landscape.inconsistency import (
    generalized_eig_dense,
)
from tests.inconsistency.helpers import (
    random_spd,
)


@settings(max_examples=40, deadline=None)
@given(
    dim=st.integers(1, 8),
    seed=st.integers(0, 2**31 - 1),
    cond=st.floats(1.0, 1e4),
)
def test_dense_matches_scipy_generalized_eigh(dim, seed, cond):
    rng = np.random.default_rng(seed)
    H_A, H_B = random_spd(rng, dim, cond), random_spd(rng, dim, cond)
    H_B = H_B - rng.uniform(0, 2) * np.trace(H_B) / dim * np.eye(dim)  # H_B may be indefinite
    eig = generalized_eig_dense(H_B, H_A)
    ref = scipy.linalg.eigh(H_B, H_A, eigvals_only=True)[-1]
    assert eig.value == pytest.approx(ref, rel=1e-9, abs=1e-9 * np.abs(H_B).max())
    v = eig.vector
    assert v @ H_A @ v == pytest.approx(1.0, rel=1e-9)
    np.testing.assert_allclose(
        H_B @ v, eig.value * H_A @ v, atol=1e-8 * np.abs(H_B).max() * (1 + np.linalg.norm(v))
    )
    eps = 0.37
    theta = eig.maximiser(eps)
    assert 0.5 * theta @ H_A @ theta <= eps * (1 + 1e-9)
    assert 0.5 * theta @ H_B @ theta == pytest.approx(eig.curvature_term(eps), rel=1e-8, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(dim=st.integers(2, 4), seed=st.integers(0, 2**31 - 1), cond=st.floats(1.0, 10.0))
def test_ellipsoid_sampling_never_exceeds_and_approaches(dim, seed, cond):
    """Brute force: ½tᵀH_Bt over random t on ½tᵀH_At = ε is ≤ ε·λ_max and gets close."""
    rng = np.random.default_rng(seed)
    H_A, H_B = random_spd(rng, dim, cond), random_spd(rng, dim, cond)
    eps = 1e-2
    eig = generalized_eig_dense(H_B, H_A)
    T = rng.standard_normal((20000, dim))
    T *= np.sqrt(2 * eps / np.einsum("ni,ij,nj->n", T, H_A, T))[:, None]
    sampled = 0.5 * np.einsum("ni,ij,nj->n", T, H_B, T)
    bound = eig.curvature_term(eps)
    assert sampled.max() <= bound * (1 + 1e-10)
    assert sampled.max() >= 0.97 * bound


def test_negative_definite_b_gives_a_zero_curvature_term():
    eig = generalized_eig_dense(-np.eye(3), np.eye(3))
    assert eig.value == pytest.approx(-1.0)
    assert eig.curvature_term(0.1) == 0.0
    assert not np.any(eig.maximiser(0.1))


def test_shared_null_space_is_exact_on_the_range():
    H_A = np.diag([1.0, 2.0, 0.0])
    H_B = np.diag([3.0, 1.0, 0.0])
    eig = generalized_eig_dense(H_B, H_A)
    assert eig.remedy == "range" and eig.subspace_dim == 2
    assert eig.value == pytest.approx(3.0)


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_dense_curvatures_closed_form_or_float64_products(scale):
    """The output layer's closed form where it applies; a head whose output is changed after
    it passes the model-level test (``has_closed_form``) but is refused at run time, and the
    float64 products take over: both equal the float64 Hessian of the risk."""
    import torch
    from torch import nn
    from torch.func import functional_call, hessian

    from landscape.inconsistency.dense import dense_curvatures

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.featurizer = nn.Sequential(nn.Linear(3, 4), nn.Tanh())
            self.classifier = nn.Linear(4, 1)

        def forward(self, x):
            z = self.classifier(self.featurizer(x))
            return z if scale == 1.0 else scale * z

    torch.manual_seed(0)
    model = Model().eval()
    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(30, 3, generator=g), (torch.rand(30, 1, generator=g) < 0.5).float()
    loss = nn.BCEWithLogitsLoss()
    H = dense_curvatures(model, loss, {"a": [(X, y)]}, "classifier", "hessian")["a"][0]
    m64 = Model().double()
    m64.load_state_dict(model.state_dict())
    fixed = {n: p.detach().double() for n, p in model.named_parameters()}
    w0 = torch.cat([fixed["classifier.weight"].reshape(-1), fixed["classifier.bias"]])

    def risk(w):
        tensors = {**fixed, "classifier.weight": w[:4].view(1, 4), "classifier.bias": w[4:]}
        return loss(functional_call(m64, tensors, (X.double(),)), y.double())

    np.testing.assert_allclose(H, hessian(risk)(w0).numpy(), rtol=1e-6, atol=1e-9)
