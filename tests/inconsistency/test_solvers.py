"""Counting operators and Lanczos Ritz pairs."""

from __future__ import annotations

import numpy as np
import pytest

from landscape.inconsistency import (
    CountingOperator,
    lanczos_ritz,
)
from tests.inconsistency.helpers import (
    random_spd,
)


def test_counting_operator_counts_columns():
    op = CountingOperator(np.eye(5))
    op.matvec(np.ones(5))
    op.matmat(np.ones((5, 3)))
    assert op.products == 4


def test_lanczos_bounds_the_spectrum():
    rng = np.random.default_rng(1)
    H = random_spd(rng, 30, 50.0) - 3.0 * np.eye(30)
    lam = np.linalg.eigvalsh(H)
    part = lanczos_ritz(CountingOperator(H), steps=12, seed=0)
    theta, V = part.values, part.vectors
    assert part.spectrum[0] >= lam[0] - 1e-10 and part.spectrum[-1] <= lam[-1] + 1e-10
    assert theta[0] == pytest.approx(part.spectrum[0]) and part.products == 12
    full = lanczos_ritz(CountingOperator(H), steps=30, seed=0)
    np.testing.assert_allclose(full.spectrum, lam, atol=1e-8 * np.abs(lam).max())
    np.testing.assert_allclose(H @ V[:, -1], theta[-1] * V[:, -1], atol=1e-3 * np.abs(lam).max())
