"""DESIGN.md's list of bad input: each answered by one line naming the problem and the fix.

Unknown algorithm or domain, a checkpoint from another model, ε ≤ 0, a single domain where
pairs are needed, an empty domain, NaN in the data, a model with dropout left in train mode
during curvature work, a Hessian that is not positive definite where the method needs it.
The CLI turns the same errors into ``landscape <command>: error: <line>`` (tests/cli).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import landscape
from landscape.inconsistency import NotPositiveDefiniteError
from landscape.surface import plane_directions
from tests.cases import make_binary_domains, make_mlp


def _plane_through_checkpoints_of_another_model(model, tmp):
    paths = [tmp / "a.safetensors", tmp / "b.safetensors"]
    for seed, path in enumerate(paths):
        landscape.save_checkpoint(path, make_mlp(dim=7, seed=seed), {})
    return plane_directions(model, paths)


def _nan_inputs(domains):
    X, y = domains["d0"][0]
    return {"d0": [(X * float("nan"), y)], "d1": domains["d1"]}


def _dropout_model():
    return nn.Sequential(nn.Linear(6, 4), nn.Dropout(0.5), nn.Linear(4, 1)).double().train()


EMPTY = {"d0": [(torch.zeros(0, 6, dtype=torch.float64), torch.zeros(0, 1, dtype=torch.float64))]}
LOSS = nn.BCEWithLogitsLoss()

CASES = {
    "unknown algorithm": (
        lambda m, d, tmp: landscape.TrainConfig(algorithms=["erm", "fishrr"]),
        ValueError,
        "unknown algorithm 'fishrr'; choose from",
    ),
    "unknown domain": (
        lambda m, d, tmp: landscape.colored_mnist(color_flip={"+85%": 0.1}),
        ValueError,
        "unknown Colored MNIST domain '+85%'",
    ),
    "checkpoint from another model": (
        lambda m, d, tmp: _plane_through_checkpoints_of_another_model(m, tmp),
        ValueError,
        "checkpoint 0 was saved from another model: 'featurizer.1.weight' has shape (5, 7)",
    ),
    "epsilon <= 0": (
        lambda m, d, tmp: landscape.inconsistency_score(m, LOSS, d, 0.0, progress=False),
        ValueError,
        "epsilon must be > 0",
    ),
    "a single domain where pairs are needed": (
        lambda m, d, tmp: landscape.inconsistency_score(m, LOSS, {"d0": d["d0"]}, 0.1),
        ValueError,
        "needs at least 2 domains, got 1",
    ),
    "an empty domain": (
        lambda m, d, tmp: landscape.gradient_variance(m, LOSS, EMPTY),
        ValueError,
        "domain 'd0' is empty",
    ),
    "NaN in the data": (
        lambda m, d, tmp: landscape.hessian_diagonal(m, LOSS, _nan_inputs(d)),
        ValueError,
        "domain 'd0': batch 0 has NaN or infinite values in its inputs X",
    ),
    "dropout left in train mode": (
        lambda m, d, tmp: landscape.top_eigenpairs(_dropout_model(), LOSS, d),
        ValueError,
        "call model.eval()",
    ),
    "a Hessian that is not positive definite": (
        lambda m, d, tmp: landscape.inconsistency_score(
            m, LOSS, d, 0.1, method="dense", progress=False
        ),
        NotPositiveDefiniteError,
        "pass remedy='damping'",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gets_one_clear_line(name, tmp_path):
    call, error, phrase = CASES[name]
    model, domains = make_mlp(), make_binary_domains()
    with pytest.raises(error) as info:
        call(model, domains, tmp_path)
    message = str(info.value)
    assert phrase in message
    assert "\n" not in message
