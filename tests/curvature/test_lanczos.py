"""The Lanczos iteration (landscape/curvature/lanczos.py) on graded spectra, in float32 and
float64, against dense float64 eigenvalues: converged means accurate to ``tol * lambda_max``,
reported residuals are true residuals, and quadrature keeps all its nodes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape import curvature as C
from landscape.curvature import reference as ref
from tests.cases import make_binary_domains, make_mlp

# the spectrum of a trained ERM head on Colored MNIST (391 parameters), then a decaying tail
TOP = [0.170, 0.0150, 1.95e-3, 1.38e-4, 2.21e-5]


def graded(dtype: torch.dtype, D: int = 391, seed: int = 0):
    """``A = U diag(lambda) U^T`` in ``dtype`` and its eigenvalues (float64, descending)."""
    g = torch.Generator().manual_seed(seed)
    tail = torch.logspace(-5, -11, D - len(TOP), dtype=torch.float64)
    tail = tail * torch.rand(D - len(TOP), generator=g, dtype=torch.float64)
    evals = torch.cat([torch.tensor(TOP, dtype=torch.float64), tail])
    U, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    A = (U * evals) @ U.T
    return ((A + A.T) / 2).to(dtype), torch.sort(evals, descending=True).values.numpy()


def start(D: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(D, generator=torch.Generator().manual_seed(1), dtype=dtype)


@pytest.mark.parametrize("tol", [1e-4, 1e-6, 1e-8, 1e-12])
def test_graded_spectrum_is_accurate_or_not_converged(dtype, tol):
    """Before: float32 returned lambda_5 56% off (7e-5 lambda_max) with converged=True after
    300 products at tol=1e-8 (a float32-eps invariance test discarded the Krylov space)."""
    A, evals = graded(dtype)
    out = C.lanczos(lambda v: A @ v, start(A.shape[0], dtype), k=5, tol=tol)
    values, vectors, residuals = out["largest"]
    error = np.abs(values - evals[:5]) / evals[0]
    if out["converged"]:
        assert error.max() <= tol, (error, out["num_products"])
    if dtype == torch.float64 or tol >= 1e-6:  # reachable: float32 resolves ~1e-7 lambda_max
        assert out["converged"]
    # the reported residuals are the true ones, ||A u - lambda u|| in float64
    A64, U = A.double(), vectors.double()
    true = (A64 @ U - U * torch.as_tensor(values)).norm(dim=0).numpy()
    floor = 10 * torch.finfo(dtype).eps * evals[0]
    np.testing.assert_allclose(residuals, true, rtol=1e-3, atol=floor)
    assert vectors.dtype == dtype


@pytest.mark.parametrize("tol", [1e-4, 1e-8])
def test_one_product_per_step_and_vectors_within_davis_kahan(dtype, tol):
    """Convergence checks use the recorded coefficients, not products: the operator is
    called exactly once per Krylov step. Each returned vector is as close to the dense
    float64 eigenvector as Davis-Kahan allows: ``sin angle <= r_i / gap_i`` with the true
    residual ``r_i`` and the gap of ``theta_i`` to the other eigenvalues (plus the dtype's
    noise), compared up to sign."""
    A, evals = graded(dtype)
    calls = []

    def matvec(v):
        calls.append(1)
        return A @ v

    out = C.lanczos(matvec, start(A.shape[0], dtype), k=5, tol=tol)
    assert len(calls) == out["num_products"] == out["steps"]
    values, vectors, residuals = out["largest"]
    w, V = torch.linalg.eigh(A.double())
    V = V[:, torch.argsort(w, descending=True)][:, :5].numpy()
    noise = 10 * torch.finfo(dtype).eps * evals[0] * np.sqrt(A.shape[0])
    for i in range(5):
        gap = np.min(np.abs(values[i] - np.delete(evals, i)))
        # sin angle as the norm of the unit vector's part orthogonal to V_i (up to sign):
        # sqrt(1 - cos^2) would turn the float32 vector's norm error (1e-9) into 5e-5
        v = vectors[:, i].double().numpy()
        v = v / np.linalg.norm(v)
        sine = np.linalg.norm(v - (V[:, i] @ v) * V[:, i])
        assert sine <= (residuals[i] + noise) / gap + 1e-6, (i, sine, residuals[i], gap)


def test_float32_stops_at_the_noise_level_instead_of_running_on():
    A, _ = graded(torch.float32)
    out = C.lanczos(lambda v: A @ v, start(A.shape[0], torch.float32), k=5, tol=1e-12)
    assert not out["converged"] and out["num_products"] < 60
    assert 0 < out["noise"] < 1e-6 * out["largest"][0][0]


def test_quadrature_keeps_all_nodes_on_a_graded_spectrum(dtype):
    """Before: the float32 invariance test stopped SLQ after 5-7 of 64 nodes."""
    A, _ = graded(dtype)
    v = C.rademacher(A.shape[0], 1, 0, dtype, "cpu")[0]
    out = C.lanczos(lambda x: A @ x, v, steps=64)
    assert out["steps"] == 64 and len(out["nodes"]) == 64
    np.testing.assert_allclose(out["weights"].sum(), 1.0, rtol=1e-6)
    A64, v64 = A.double(), v.double()
    for p in (1, 2, 3):
        exact = float(v64 @ torch.linalg.matrix_power(A64, p) @ v64 / (v64 @ v64))
        got = float(np.sum(out["weights"] * out["nodes"] ** p))
        assert got == pytest.approx(exact, rel=1e-4 if dtype == torch.float32 else 1e-10)


def test_exact_invariance_restarts_and_finds_multiplicities():
    """A rank-3 matrix: the Krylov space is invariant after 3 steps; the restarts find the
    null space's copies of 0 (float64)."""
    g = torch.Generator().manual_seed(0)
    B = torch.randn(12, 3, generator=g, dtype=torch.float64)
    A = B @ B.T
    out = C.lanczos(lambda v: A @ v, start(12, torch.float64), k=4, which="smallest", tol=1e-10)
    np.testing.assert_allclose(out["smallest"][0], np.zeros(4), atol=1e-12)
    assert out["converged"]


def _trained_mlp(dtype: torch.dtype):
    """A small MLP trained by Adam on two binary domains: its head's Hessian is graded."""
    domains = make_binary_domains(n_domains=1, n=256, dim=6, seed=3)
    X, y = domains["d0"][0]
    torch.manual_seed(0)
    model = make_mlp(dim=6, hidden=(32, 24), out=1, seed=0).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_func = nn.BCEWithLogitsLoss()
    for _ in range(300):
        opt.zero_grad()
        loss_func(model(X), y).backward()
        opt.step()
    model = model.eval().to(dtype)
    return model, loss_func, {"d0": [(X.to(dtype), y.to(dtype))]}


@pytest.mark.parametrize("params", ["classifier", None], ids=["head", "all"])
def test_top_eigenpairs_of_a_trained_network_match_dense_float64(dtype, params):
    model, loss_func, domains = _trained_mlp(dtype)
    model64 = _trained_mlp(torch.float64)[0]
    data64 = [(X.double(), y.double()) for X, y in domains["d0"]]
    evals = ref.eigenpairs(ref.dense_hessian(model64, loss_func, data64, params), 5)[0].numpy()
    tol = 1e-6 if dtype == torch.float32 else 1e-10
    eig = C.top_eigenpairs(model, loss_func, domains, params, k=5, tol=tol)
    assert eig.converged["d0"]
    error = np.abs(eig.eigenvalues["d0"] - evals) / evals[0]
    # float32 weights and data are rounded copies of the float64 ones: allow that perturbation
    allowed = tol if dtype == torch.float64 else tol + 1e-6
    assert error.max() <= allowed, error
    if params == "classifier":
        assert evals[0] / evals[4] > 10  # graded, like a trained head


def test_quadratic_bound_of_overlapping_intervals_warns_nothing():
    """Before: r**2 / tiny overflowed with "RuntimeWarning: overflow encountered in divide"
    (seen from the inconsistency remedy on a clustered spectrum); the bound is then r."""
    import warnings

    from landscape.curvature.lanczos import _gaps, _quadratic

    theta, res = np.array([1.0, 1.0 + 1e-9, 2.0]), np.array([1e-3, 1e-3, 1e-12])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gaps = _gaps(theta, res)
        bound = _quadratic(res, gaps)
    np.testing.assert_array_equal(bound[:2], res[:2])
    assert bound[2] <= res[2]


def test_curvature_modules_compile_without_warnings():
    """No invalid escape sequence (SyntaxWarning / DeprecationWarning) in any docstring."""
    import pathlib
    import warnings

    import landscape.curvature as C

    for path in sorted(pathlib.Path(C.__file__).parent.glob("*.py")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            compile(path.read_text(), str(path), "exec")
