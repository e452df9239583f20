"""Shared test fixtures: the case registry of ``tests/cases.py``, dtypes and devices."""

from __future__ import annotations

import pytest
import torch
from hypothesis import settings

from tests.cases import (  # noqa: F401  (re-exported for the tests that import them here)
    CASES,
    CASES_BY_LOSS,
    DEVICES,
    DTYPES,
    make_binary_domains,
    make_mlp,
    make_multiclass_domains,
    make_regression_domains,
)
from tests.cases import ids as case_ids

# Hypothesis draws the same examples on every run and machine (a suite must not pass or fail
# by the draw; a case found once is kept as an @example) and writes no example database.
settings.register_profile("landscape", derandomize=True, database=None)
settings.load_profile("landscape")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request):
    return request.param


@pytest.fixture(params=DEVICES)
def device(request):
    """``"cpu"``, and ``"cuda"`` where one is present."""
    return request.param


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request):
    """One :class:`tests.cases.Case` (model × loss × parameters)."""
    return request.param


@pytest.fixture(params=list(CASES_BY_LOSS.values()), ids=case_ids(CASES_BY_LOSS.values()))
def loss_case(request):
    """The whole-network :class:`tests.cases.Case` of each loss (for tests that choose the
    parameter selection themselves)."""
    return request.param
