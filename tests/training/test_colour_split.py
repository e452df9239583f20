"""The colour-split first layer (landscape.training.colour_split) against the plain forward:
logits, risks, penalties and gradients in float64 (a dense reference), and a short float64
run's history, with and without the split (in float32, Adam's g / sqrt(v) turns the summation
order's rounding of near-zero gradients into visible steps, so it is not compared there)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from landscape.losses import build_loss
from landscape.models import build_model
from landscape.training import TrainConfig, Trainer
from landscape.training.colour_split import ColourSplitForward, colour_split, lit_channels
from landscape.training.penalties import ALGORITHMS, Penalties

SPEC = {"arch": "mlp", "input_dim": 2 * 3 * 3, "hidden_dims": [7, 6], "output_dim": 1}


def coloured(n: int, seed: int, gray: bool = False, dtype=torch.float64):
    """``n`` images ``[n, 2, 3, 3]`` lighting one random channel each (both when ``gray``),
    some pixels zero as in MNIST, and binary labels ``[n, 1]``."""
    g = torch.Generator().manual_seed(seed)
    digits = torch.rand(n, 3, 3, generator=g, dtype=dtype) * (
        torch.rand(n, 3, 3, generator=g) > 0.3
    )
    X = torch.zeros(n, 2, 3, 3, dtype=dtype)
    red = torch.rand(n, generator=g) < 0.6
    X[red, 0], X[~red, 1] = digits[red], digits[~red]
    if gray:
        X[:, 0] = X[:, 1] = digits
    y = (torch.rand(n, 1, generator=g) < 0.5).to(dtype)
    return X, y


def test_lit_channels_detects_the_structure_and_refuses_two_lit_channels():
    X, _ = coloured(30, 0)
    channel = lit_channels(X)
    assert torch.equal(channel, (X[:, 1].flatten(1) != 0).any(1).long())
    X[3] = 0  # a blank image: channel 0
    assert lit_channels(X)[3] == 0
    assert lit_channels(coloured(30, 1, gray=True)[0]) is None
    assert lit_channels(torch.ones(5, 18)) is None  # no channel axis


def test_colour_split_groups_the_samples_by_channel_and_keeps_the_permutation():
    X, y = coloured(30, 2)
    split = colour_split(X, y)
    assert sorted(split.order.tolist()) == list(range(30))
    assert torch.equal(split.X, X[split.order]) and torch.equal(split.y, y[split.order])
    X[:, :, 0, 0] = 0  # one pixel dark in every image: in no group's columns
    split = colour_split(X, y)
    for (c, start, stop), k, part, flat in zip(
        split.groups, split.columns, split.parts, split.weight_columns, strict=True
    ):
        pixels = split.X[start:stop, c].flatten(1)
        assert torch.equal(part[:, :-1], pixels[:, k]) and torch.equal(
            part[:, -1], y.new_ones(stop - start)
        )
        assert torch.equal(flat, c * 9 + k)
        assert 0 not in k.tolist() and not pixels[:, [j for j in range(9) if j not in k]].any()
        assert not split.X[start:stop, 1 - c].any()
    assert [g[0] for g in split.groups] == [0, 1] and split.groups[-1][2] == 30


def test_split_forward_equals_the_plain_forward_and_falls_back_when_it_does_not_apply():
    torch.manual_seed(0)
    model = build_model(SPEC).to(torch.float64)
    X, y = coloured(40, 3)
    split = colour_split(X, y)
    forward = ColourSplitForward(model, split)
    assert forward.applies(split.X)
    torch.testing.assert_close(forward(split.X), model(split.X), rtol=1e-12, atol=1e-12)
    assert not forward.applies(split.X.clone())  # another tensor: model(X)
    handle = model.featurizer[1].register_forward_hook(lambda *a: None)
    assert not forward.applies(split.X)  # a hook on the first layer: model(X)
    handle.remove()
    assert not ColourSplitForward(nn.Sequential(nn.Flatten(), nn.Linear(18, 1)), split).applies(
        split.X
    )


def test_a_hooked_later_layer_is_called_as_a_module_and_its_hook_fires():
    """A hook on the second hidden layer ends the fused layers there: the layer runs as a
    module (its hook sees its real input) and the logits and gradients are the plain ones."""
    torch.manual_seed(0)
    model = build_model(SPEC).to(torch.float64)
    X, y = coloured(40, 3)
    split = colour_split(X, y)
    seen = []
    model.featurizer[3].register_forward_hook(lambda m, inputs, out: seen.append(inputs[0]))
    fast = ColourSplitForward(model, split)(split.X)
    assert len(seen) == 1
    plain = model(split.X)
    torch.testing.assert_close(seen[0], seen[1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast, plain, rtol=1e-12, atol=1e-12)
    fast_grads = torch.autograd.grad(fast.square().sum(), list(model.parameters()))
    plain_grads = torch.autograd.grad(plain.square().sum(), list(model.parameters()))
    for g_fast, g_plain in zip(fast_grads, plain_grads, strict=True):
        torch.testing.assert_close(g_fast, g_plain, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("where", ["model", "featurizer", "flatten", "global"])
def test_hooks_the_split_forward_would_skip_send_it_to_the_plain_forward(where):
    """A hook on a module the split forward never calls (the model, its featurizer, its
    ``Flatten``) or a global module hook: ``model(X)``, and the hook fires."""
    model = build_model(SPEC).to(torch.float64)
    split = colour_split(*coloured(40, 3))
    forward = ColourSplitForward(model, split)
    seen = []

    def hook(module, inputs, out):
        seen.append(module)

    owner = {"model": model, "featurizer": model.featurizer, "flatten": model.featurizer[0]}
    if where == "global":
        handle = nn.modules.module.register_module_forward_hook(hook)
    else:
        handle = owner[where].register_forward_hook(hook)
    try:
        assert not forward.applies(split.X)
        torch.testing.assert_close(forward(split.X), model(split.X), rtol=0, atol=0)
    finally:
        handle.remove()
    assert seen and (where == "global" or seen[0] is owner[where])
    assert forward.applies(split.X)  # hook removed: the split forward again


def _penalty_outputs(algorithm: str, split: bool):
    """Risks, penalty, logged values and the gradient of ``mean risk + penalty`` (float64)."""
    torch.manual_seed(1)
    model = build_model(SPEC).to(torch.float64)
    loss_func = build_loss("bce")
    batches = {"a": coloured(50, 4), "b": coloured(40, 5)}
    forwards = {}
    if split:
        splits = {d: colour_split(*xy) for d, xy in batches.items()}
        batches = {d: (s.X, s.y) for d, s in splits.items()}
        forwards = {d: ColourSplitForward(model, s) for d, s in splits.items()}
    pen = Penalties(model, loss_func, list(batches), algorithm=algorithm, forwards=forwards)
    out = pen(batches)
    total = torch.stack(list(out.risks.values())).mean() + out.penalty
    grads = torch.autograd.grad(total, list(model.parameters()))
    return out, grads


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_penalties_and_gradients_equal_the_plain_forwards(algorithm):
    plain, plain_grads = _penalty_outputs(algorithm, split=False)
    fast, fast_grads = _penalty_outputs(algorithm, split=True)
    close = dict(rtol=1e-10, atol=1e-12)
    for d in plain.risks:
        torch.testing.assert_close(fast.risks[d], plain.risks[d], **close)
        assert fast.accuracies[d] == pytest.approx(plain.accuracies[d], abs=1e-12)
    torch.testing.assert_close(fast.penalty, plain.penalty, **close)
    assert fast.logged == pytest.approx(plain.logged, rel=1e-10, abs=1e-12)
    for g_fast, g_plain in zip(fast_grads, plain_grads, strict=True):
        torch.testing.assert_close(g_fast, g_plain, **close)


def _short_run(algorithm: str, split_colours: bool):
    config = TrainConfig(
        algorithms=[algorithm], steps=12, anneal_step=5, restarts=1, hidden_dims=[7, 6],
        lr=1e-2, penalty_weight=100.0, device="cpu", dtype="float64", eval_every=4,
        checkpoint_steps=[0, 5], train_domains=["a", "b"], test_domains=["gray"],
    )  # fmt: skip
    batches = {
        "a": coloured(60, 6),
        "b": coloured(60, 7),
        "gray": coloured(30, 8, gray=True),
    }
    trainer = Trainer(config, algorithm, 0, batches, ["a", "b"], ["gray"],
                      split_colours=split_colours)  # fmt: skip
    assert set(trainer.colour_splits) == ({"a", "b"} if split_colours else set())
    while trainer.step < config.steps:
        trainer.train_step()
    return trainer.rows + [trainer.evaluate()], trainer.model


@pytest.mark.parametrize("algorithm", ["erm", "fishr", "irm", "vrex"])
def test_a_short_run_with_the_split_has_the_plain_runs_history(algorithm):
    rows, model = _short_run(algorithm, split_colours=True)
    plain_rows, plain_model = _short_run(algorithm, split_colours=False)
    assert [list(r) for r in rows] == [list(r) for r in plain_rows]
    for row, plain in zip(rows, plain_rows, strict=True):
        assert row == pytest.approx(plain, rel=1e-8, abs=1e-10, nan_ok=True)
    for p, q in zip(model.parameters(), plain_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-8, atol=1e-10)


def test_the_test_domains_are_evaluated_every_eval_every_steps_and_where_it_matters():
    rows, _ = _short_run("fishr", split_colours=True)
    evaluated = [int(r["step"]) for r in rows if r["acc/gray"] == r["acc/gray"]]
    # every 4 steps, the checkpoint step 5, the last update (11) and the final weights (12)
    assert evaluated == [0, 4, 5, 8, 11, 12]
    assert all(r["acc/a"] == r["acc/a"] for r in rows)  # training domains: every step
