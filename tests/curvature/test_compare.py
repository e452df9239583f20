"""Cross-domain comparison (landscape/curvature/compare.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landscape import curvature as C
from landscape.curvature import reference as ref
from tests.curvature._common import (
    assert_unchanged,
    close,
    small_case,
    snapshot,
)


def test_compare_domains(tmp_path):
    model, loss_func, domains = small_case("ce")
    snap = snapshot(model)
    twin = dict(domains)
    twin["d0_copy"] = domains["d0"]
    cmp = C.compare_domains(model, loss_func, twin, "classifier", k=2)
    names = ["d0", "d1", "d0_copy"]
    assert cmp.domains == names
    v = {n: ref.gradient_variance(model, loss_func, twin[n], "classifier").numpy() for n in names}
    h = {
        n: torch.diagonal(ref.dense_hessian(model, loss_func, twin[n], "classifier")).numpy()
        for n in names
    }
    cos = lambda a, b: a @ b / np.linalg.norm(a) / np.linalg.norm(b)  # noqa: E731
    close(cmp.variance_distance[0, 1], np.sum((v["d0"] - v["d1"]) ** 2))
    close(cmp.variance_cosine[1, 0], cos(v["d0"], v["d1"]))
    close(cmp.diagonal_distance[0, 1], np.sum((h["d0"] - h["d1"]) ** 2))
    close(cmp.diagonal_cosine[0, 1], cos(h["d0"], h["d1"]))
    close(cmp.within_cosine[1], cos(v["d1"], h["d1"]))
    assert cmp.variance_distance[0, 2] == 0 and cmp.diagonal_cosine[0, 2] == pytest.approx(1)
    close(cmp.principal_angles[0, 2], np.zeros(2), 0, 1e-6)
    # principal angles between the dense top-2 eigenspaces
    U = [
        ref.eigenpairs(ref.dense_hessian(model, loss_func, twin[n], "classifier"), 2)[1]
        for n in ("d0", "d1")
    ]
    s = np.linalg.svd(U[0].numpy().T @ U[1].numpy(), compute_uv=False)
    close(cmp.principal_angles[0, 1], np.sort(np.arccos(np.clip(s, -1, 1))), 0, 1e-4)
    assert cmp.principal_angles[0, 1].max() > 1e-3
    loaded = C.ComparisonResult.load(cmp.save(tmp_path / "cmp"))
    close(loaded.principal_angles, cmp.principal_angles, 0, 0)
    # stochastic diagonals share probes: two identical domains give identical estimates
    hut = C.compare_domains(
        model, loss_func, twin, "classifier", k=0, diagonal_method="hutchinson", num_probes=8
    )
    assert hut.diagonal_distance[0, 2] == 0.0 and hut.principal_angles.shape == (3, 3, 0)
    with pytest.raises(ValueError, match="compare_domains needs at least 2 domains"):
        C.compare_domains(model, loss_func, {"d0": domains["d0"]})
    assert_unchanged(model, snap)


def test_cosine_and_principal_angles():
    """One cosine (NaN when a vector is zero) and principal angles by SciPy's
    subspace_angles, ascending, equal to arccos of the singular values of Q_U^T Q_V."""
    assert C.cosine(np.array([1.0, 0.0]), torch.tensor([2.0, 2.0])) == pytest.approx(2**-0.5)
    assert np.isnan(C.cosine(np.zeros(3), np.ones(3)))
    assert np.isnan(C.cosine(torch.zeros(2, 2), torch.zeros(2, 2)))
    g = np.random.default_rng(0)
    U, V = g.standard_normal((8, 3)), g.standard_normal((8, 3))
    Qu, Qv = np.linalg.qr(U)[0], np.linalg.qr(V)[0]
    s = np.linalg.svd(Qu.T @ Qv, compute_uv=False)
    angles = C.principal_angles(U, V)
    close(angles, np.sort(np.arccos(np.clip(s, -1, 1))), 0, 1e-10)
    assert np.all(np.diff(angles) >= 0)
    # small angles are accurate (arccos of singular values near 1 is not)
    tilt = Qu + 1e-9 * g.standard_normal((8, 3))
    assert 0 < C.principal_angles(Qu, tilt).max() < 1e-8
