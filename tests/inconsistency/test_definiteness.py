"""Definiteness reports of singular and indefinite ``H_A``."""

from __future__ import annotations

import numpy as np
import pytest

from landscape.inconsistency import (
    NotPositiveDefiniteError,
    generalized_eig_dense,
)


def test_singular_h_a_reports_the_unbounded_direction():
    H_A = np.diag([1.0, 2.0, 0.0])
    H_B = np.diag([1.0, 1.0, 0.5])
    with pytest.raises(
        NotPositiveDefiniteError, match="singular.*\\+inf.*remedy='damping'"
    ) as info:
        generalized_eig_dense(H_B, H_A, domain="+80%")
    rep = info.value.report
    assert rep.status == "singular" and rep.domain == "+80%"
    np.testing.assert_allclose(np.abs(rep.unbounded_direction), [0, 0, 1], atol=1e-12)
    assert rep.curvature_along["B"] == pytest.approx(0.5)
    assert rep.unbounded_for == ["B"]
    assert rep.min_eigenvalue == pytest.approx(0.0, abs=1e-15)
    assert rep.max_eigenvalue == pytest.approx(2.0)


def test_indefinite_h_a_is_reported_with_its_eigenvalues():
    H_A = np.diag([1.0, -0.5])
    with pytest.raises(NotPositiveDefiniteError, match="indefinite.*smallest eigenvalue -0.5"):
        generalized_eig_dense(np.eye(2), H_A)
