"""Fixtures of the figure tests."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def close_all():
    """Close every figure a test leaves open."""
    yield
    plt.close("all")
