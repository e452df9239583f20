"""Remedies (damping, top-k), validated once for every backend."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from landscape.inconsistency import (
    MatrixFreeCurvature,
    generalized_eig_dense,
)
from tests.inconsistency.helpers import (
    random_spd,
)


def test_damping_is_relative_to_the_spectrum_and_recorded():
    H_A = np.diag([4.0, 1.0, 0.0])
    H_B = np.diag([1.0, 1.0, 1.0])
    eig = generalized_eig_dense(H_B, H_A, remedy="damping", damping=0.01)
    assert eig.delta == pytest.approx(0.04)
    assert eig.value == pytest.approx(1 / 0.04)
    ref = scipy.linalg.eigh(H_B, H_A + 0.04 * np.eye(3), eigvals_only=True)[-1]
    assert eig.value == pytest.approx(ref)
    with pytest.raises(ValueError, match="use damping > 0.5"):
        generalized_eig_dense(H_B, np.diag([4.0, 1.0, -2.0]), remedy="damping", damping=0.1)


def test_top_k_restricts_to_the_leading_eigenspace():
    rng = np.random.default_rng(0)
    H_A = random_spd(rng, 6, 10.0)
    H_A = H_A - np.linalg.eigvalsh(H_A)[1] * np.eye(6)  # two non-positive eigenvalues
    H_B = random_spd(rng, 6, 10.0)
    lam, Q = np.linalg.eigh(H_A)
    U = Q[:, -3:]
    ref = scipy.linalg.eigh(U.T @ H_B @ U, np.diag(lam[-3:]), eigvals_only=True)[-1]
    eig = generalized_eig_dense(H_B, H_A, remedy="top-k", k=3)
    assert eig.value == pytest.approx(ref, rel=1e-10)
    assert eig.vector @ H_A @ eig.vector == pytest.approx(1.0)
    with pytest.raises(ValueError, match="k=5 exceeds the 4 positive eigenvalues"):
        generalized_eig_dense(H_B, H_A, remedy="top-k", k=5)
    free = MatrixFreeCurvature(H_A, "A", remedy="top-k", k=3)
    assert free.solve(H_B).value == pytest.approx(ref, rel=1e-8)


def test_bad_remedy_arguments():
    with pytest.raises(ValueError, match="unknown remedy 'shrink'"):
        generalized_eig_dense(np.eye(2), np.eye(2), remedy="shrink")
    with pytest.raises(ValueError, match="k must be a positive integer"):
        generalized_eig_dense(np.eye(2), np.eye(2), remedy="top-k", k=0)
    with pytest.raises(ValueError, match="damping must be a positive number"):
        generalized_eig_dense(np.eye(2), np.eye(2), remedy="damping", damping=-1)
