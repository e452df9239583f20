"""Eigenpairs and spectral densities (landscape/curvature/spectrum.py) against dense references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landscape import curvature as C
from landscape.curvature import reference as ref
from tests.cases import make_mlp
from tests.curvature._common import (
    assert_unchanged,
    build_small,
    close,
    small_case,
    snapshot,
)


@pytest.mark.parametrize("curvature", ["hessian", "ggn", "ef"])
def test_eigenpairs_and_traces_match_reference(case, curvature, tmp_path):
    model, loss_func, domains, params = build_small(case)
    snap = snapshot(model)
    k = 3
    eig = C.top_eigenpairs(
        model, loss_func, domains, params, k=k, which="both", curvature=curvature, tol=1e-15
    )
    exact = C.hessian_trace(model, loss_func, domains, params, method="exact", curvature=curvature)
    for name, data in domains.items():
        A = ref.dense_curvature(model, loss_func, data, params, curvature)
        top, V = ref.eigenpairs(A, k)
        bottom, _ = ref.eigenpairs(A, k, largest=False)
        close(eig.largest_eigenvalues[name], top.numpy(), 1e-8, 1e-10)
        if curvature == "hessian":
            close(eig.smallest_eigenvalues[name], bottom.numpy(), 1e-8, 1e-10)
        else:  # a repeated 0 (rank-deficient PSD matrix) is found once by single-vector Lanczos
            close(eig.smallest_eigenvalues[name][0], bottom[0].numpy(), 0, 1e-10)
        U = eig.largest_eigenvectors[name]
        # eigenvectors up to sign (top eigenvalues are simple here) ...
        close(np.abs(U.T @ V.numpy()), np.eye(k), 0, 1e-6)
        # ... and every returned pair is an eigenpair (covers the degenerate smallest ones)
        for vals, vecs in (
            (eig.largest_eigenvalues, eig.largest_eigenvectors),
            (eig.smallest_eigenvalues, eig.smallest_eigenvectors),
        ):
            W = torch.as_tensor(vecs[name])
            residual = A @ W - W * torch.as_tensor(vals[name])
            assert float(residual.norm(dim=0).max()) < 1e-7
            close(W.T @ W, np.eye(k), 0, 1e-8)
        assert eig.converged[name]
        assert exact.trace[name] == pytest.approx(ref.trace(A), rel=1e-10, abs=1e-12)
    loaded = C.EigenpairsResult.load(eig.save(tmp_path / "eig"))
    close(loaded.eigenvalues["d0"], eig.largest_eigenvalues["d0"], 0, 0)
    assert loaded.settings["seed"] == 0 and loaded.settings["curvature"] == curvature
    assert_unchanged(model, snap)


def test_eigsh_method_and_lanczos_uses_fewer_products():
    model, loss_func, domains = small_case("bce")
    fast = C.top_eigenpairs(model, loss_func, domains, k=2, tol=1e-8)
    arpack = C.top_eigenpairs(model, loss_func, domains, k=2, method="eigsh", tol=1e-8)
    H = ref.dense_hessian(model, loss_func, domains["d1"])
    top, _ = ref.eigenpairs(H, 2)
    close(arpack.eigenvalues["d1"], top.numpy(), 1e-8, 1e-10)
    close(fast.eigenvalues["d1"], top.numpy(), 1e-8, 1e-10)
    assert fast.num_products["d1"] < arpack.num_products["d1"]


def test_spectral_density_against_dense_spectrum():
    model, loss_func, domains = small_case("bce")
    data = {"d1": domains["d1"]}
    H = ref.dense_hessian(model, loss_func, data["d1"])
    evals = torch.linalg.eigvalsh(H).numpy()
    D = len(evals)
    sd = C.spectral_density(model, loss_func, data, num_probes=4, lanczos_steps=D, sigma=0.01)
    close(sd.weights["d1"].sum(1), np.ones(4), 1e-12, 1e-12)
    grid, dens = sd.grid["d1"], sd.density["d1"]
    assert np.trapezoid(dens, grid) == pytest.approx(1.0, abs=1e-3)
    assert sd.nodes["d1"].min() == pytest.approx(evals.min(), abs=1e-8)
    assert sd.nodes["d1"].max() == pytest.approx(evals.max(), rel=1e-8)
    # Gauss quadrature: sum_j w_j theta_j^p = v'H^p v / v'v for each probe, p < 2m (here
    # with m = 6 steps only), and the mean over probes estimates tr(H^p) / D
    short = C.spectral_density(model, loss_func, data, num_probes=4, lanczos_steps=6, seed=5)
    probes = C.rademacher(D, 4, 5, torch.float64, "cpu")
    for p in (1, 2, 5):
        Hp = torch.linalg.matrix_power(H, p)
        expected = [float(v @ Hp @ v / (v @ v)) for v in probes]
        got = np.sum(short.weights["d1"] * short.nodes["d1"] ** p, axis=1)
        close(got, expected, 1e-8, 1e-14)
        assert short.moment("d1", p) == pytest.approx(np.mean(expected), rel=1e-8)
    assert short.settings["seed"] == 5 and short.nodes["d1"].shape == (4, 6)


def test_float32_model():
    model, loss_func, domains = small_case("bce")
    model32 = make_mlp(out=1, dtype=torch.float32)
    d32 = {n: [(X.float(), y.float()) for X, y in b] for n, b in domains.items()}
    eig = C.top_eigenpairs(model32, loss_func, d32, k=2, tol=1e-4)
    H = ref.dense_hessian(model, loss_func, domains["d1"])
    close(eig.eigenvalues["d1"], ref.eigenpairs(H, 2)[0].numpy(), 1e-4, 1e-6)
    assert eig.largest_eigenvectors["d1"].dtype == np.float32
    gv = C.gradient_variance(model32, loss_func, d32)
    close(
        gv.variance["d1"],
        ref.gradient_variance(model, loss_func, domains["d1"]).numpy(),
        1e-4,
        1e-7,
    )


@pytest.mark.parametrize("method", ["lanczos", "eigsh"])
def test_default_tol_follows_the_dtype(case, dtype, method):
    """Before: the default tol=1e-8 was under float32's reach (products resolve eigenvalues to
    ~1e-7 lambda_max), so every float32 call warned "did not converge". The default is now
    1e-8 in float64 and 1e-6 in float32, recorded in settings; the pairs agree with the dense
    float64 reference of the same weights and data to 1e-6 lambda_max."""
    import warnings

    model, loss_func, domains, params = case.build(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        eig = C.top_eigenpairs(model, loss_func, domains, params, k=3, which="both",
                               method=method)  # fmt: skip
    assert eig.settings["tol"] == (1e-8 if dtype == torch.float64 else 1e-6)
    assert all(eig.converged.values())
    model64 = model.double()
    for name, data in domains.items():
        data64 = [(X.double(), y.double() if y.is_floating_point() else y) for X, y in data]
        A = ref.dense_curvature(model64, loss_func, data64, params, "hessian")
        evals = torch.linalg.eigvalsh(A).numpy()
        scale = np.abs(evals).max()
        np.testing.assert_allclose(eig.largest_eigenvalues[name], evals[::-1][:3],
                                   rtol=0, atol=1e-6 * scale)  # fmt: skip
        # a repeated eigenvalue (the CE head's null space) is found once: the first only
        np.testing.assert_allclose(eig.smallest_eigenvalues[name][0], evals[0],
                                   rtol=0, atol=1e-6 * scale)  # fmt: skip


def test_explicit_tol_is_honoured_and_checked():
    model, loss_func, domains = small_case("bce")
    model32 = make_mlp(out=1, dtype=torch.float32)
    d32 = {n: [(X.float(), y.float()) for X, y in b] for n, b in domains.items()}
    with pytest.warns(RuntimeWarning, match="did not converge to tol=1e-12"):
        eig = C.top_eigenpairs(model32, loss_func, d32, k=2, tol=1e-12)
    assert eig.settings["tol"] == 1e-12
    with pytest.raises(ValueError, match="tol must be a positive number"):
        C.top_eigenpairs(model, loss_func, domains, tol=0)
    assert C.resolve_tol(None, torch.float16) == 1e-2
    assert C.resolve_tol(None, torch.float64, float64=1e-12) == 1e-12
    assert C.resolve_tol(None, torch.float32, float64=1e-12) == 1e-6


def test_lanczos_default_tol_converges_in_float32():
    """lanczos(tol=None) resolves the tolerance from v0's dtype (was 1e-8: never converged in
    float32)."""
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(60, 60, generator=g, dtype=torch.float64))
    evals = torch.linspace(1.0, 10.0, 60, dtype=torch.float64)
    A = ((Q * evals) @ Q.T).float()
    out = C.lanczos(lambda v: A @ v, torch.randn(60, generator=g).float(), k=2)
    assert out["converged"]
    np.testing.assert_allclose(out["largest"][0], evals.numpy()[::-1][:2], atol=1e-5 * 10)
