"""landscape.domains: NaN or infinite data is named once at every public entry (issue 16)."""

from __future__ import annotations

import pytest
import torch

from landscape import curvature as C
from landscape.domains import all_finite, check_finite
from landscape.inconsistency import inconsistency_score
from landscape.surface import loss_surface
from landscape.surface.directions import random_directions
from tests.curvature._common import small_case

MESSAGE = r"domain 'd1': batch 1 has NaN or infinite values in its inputs X; remove or replace"


def _with_bad_batch(domains, value=float("nan"), where="X"):
    out = {k: [(X.clone(), y.clone()) for X, y in v] for k, v in domains.items()}
    X, y = out["d1"][0]
    X, y = X.clone(), y.clone()
    (X if where == "X" else y)[0, 0] = value
    out["d1"].append((X, y))
    return out


@pytest.mark.parametrize(
    "call",
    [
        lambda m, f, d: C.gradient_variance(m, f, d),
        lambda m, f, d: C.hessian_diagonal(m, f, d),
        lambda m, f, d: C.top_eigenpairs(m, f, d, k=1),
        lambda m, f, d: inconsistency_score(m, f, d, 0.1, progress=False),
        lambda m, f, d: inconsistency_score(
            m, f, d, 0.1, method="matrix-free", remedy="damping", progress=False
        ),
        lambda m, f, d: loss_surface(
            m, f, d, random_directions(m, seed=0), grid=(-1, 1, 3), progress=False
        ),
    ],
    ids=["variance", "diagonal", "eigenpairs", "score", "score-matrix-free", "surface"],
)
def test_nan_in_one_batch_is_named_by_every_entry(call):
    model, loss_func, domains = small_case("bce")
    with pytest.raises(ValueError, match=MESSAGE):
        call(model, loss_func, _with_bad_batch(domains))


def test_check_finite_names_targets_and_infinities_and_accepts_integers():
    X = torch.zeros(2, 3)
    check_finite({"a": [(X, torch.tensor([0, 1]))]})
    with pytest.raises(
        ValueError, match="domain 'b': batch 0 has NaN or infinite values in its targets y"
    ):
        check_finite({"a": [(X, torch.zeros(2))], "b": [(X, torch.tensor([0.0, float("inf")]))]})
    with pytest.raises(ValueError, match="domain 'a': batch 0 .* inputs X"):
        check_finite({"a": [(torch.full((2, 3), -float("inf")), torch.zeros(2))]})


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_all_finite_equals_isfinite_all_for_every_bad_value_anywhere(dtype):
    """The min / max test against ``torch.isfinite(t).all()``: a NaN, +inf or -inf at any
    place of a strided tensor, among values of both signs; empty tensors are finite."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(7, 5, 3, generator=g).to(dtype)
    for bad in (float("nan"), float("inf"), -float("inf")):
        for place in range(base.numel()):
            t = base.clone().view(-1)
            t[place] = bad
            t = t.view(7, 5, 3).transpose(0, 2)  # not contiguous
            assert all_finite(t) is False and not bool(torch.isfinite(t).all())
    assert all_finite(base) is True and all_finite(base[:0]) is True
    long = torch.randn(100_003, generator=g).to(dtype)  # the vectorised, threaded reduction
    for place in (0, 15, 16, 50_000, 100_002):  # block edges and the scalar tail
        for bad in (float("nan"), float("inf"), -float("inf")):
            t = long.clone()
            t[place] = bad
            assert all_finite(t) is False
    assert all_finite(long) is True


def test_non_finite_model_output_at_theta_star_is_named_by_curvature():
    model, loss_func, domains = small_case("bce")
    with torch.no_grad():
        next(model.parameters())[0, 0] = float("nan")
    with pytest.raises(
        ValueError, match=r"domain 'd0': the model's output is not finite at theta\*"
    ):
        C.top_eigenpairs(model, loss_func, domains, k=1)
