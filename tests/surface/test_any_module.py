"""Loss surfaces on any nn.Module (issue 10): the GroupNorm CNN and the BatchNorm residual
block of ``tests/cases.py`` (``CONV_CASES``) against a brute-force loop that sets the weights
to θ + a·d1 + b·d2; uneven batches, a streamed DataLoader, re-batching and subsampling equal
the concatenated domain; filter normalisation per output channel; the first-layer shortcut
refused in one line where the first layer is not linear."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from landscape.surface import loss_surface
from landscape.surface.directions import random_directions
from tests.cases import CONV_CASES
from tests.surface.helpers import assert_untouched, brute_force, snapshot

CASES = {c.id: c for c in CONV_CASES}
GRID = (-1.0, 1.0, 3)
AXIS = np.linspace(-1.0, 1.0, 3)


def surface(model, loss, domains, dirs, **kw):
    return loss_surface(model, loss, domains, dirs, grid=GRID, progress=False, **kw)


PATHS = [
    (case.id, ppc, bn, biases)
    for case in CONV_CASES
    for ppc, bn in ((1, "running"), (3, "running"), (1, "recompute"))
    for biases in (False, True)
    if not (bn == "recompute" and case.id.startswith("groupnorm"))  # GroupNorm has no stats
]


@pytest.mark.parametrize("case_id, ppc, batch_norm, biases", PATHS)
def test_surface_equals_setting_the_weights(case_id, ppc, batch_norm, biases):
    model, loss, domains, params = CASES[case_id].build(n=10, cuts={"d1": [4]})
    dirs = random_directions(model, params, seed=1, include_biases=biases)
    snap = snapshot(model)
    res = surface(model, loss, domains, dirs, points_per_call=ppc, batch_norm=batch_norm)
    assert_untouched(model, snap)
    assert res.settings["first_layer"] is None  # a convolution comes first
    want, acc = brute_force(model, loss, domains, dirs, AXIS, AXIS,
                            bn_recompute=batch_norm == "recompute")  # fmt: skip
    for name in domains:
        np.testing.assert_allclose(res.losses[name], want[name], rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(res.accuracies[name], acc[name], rtol=0, atol=1e-12)


class CountingDataset(Dataset):
    """A dataset that counts its reads (a streamed domain is read again at every point)."""

    def __init__(self, X, y):
        self.X, self.y, self.reads = X, y, 0

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        self.reads += 1
        return self.X[i], self.y[i]


@pytest.mark.parametrize("case_id", ["groupnorm-ce-all", "batchnorm-ce-all"])
def test_uneven_batches_and_a_streamed_dataloader_equal_the_full_batch(case_id):
    model, loss, full, params = CASES[case_id].build(n=10)
    dirs = random_directions(model, params, seed=0)
    ref = surface(model, loss, full, dirs)
    _, _, uneven, _ = CASES[case_id].build(n=10, cuts={"d0": [3], "d1": [2, 7]})
    datasets = {d: CountingDataset(*b[0]) for d, b in full.items()}
    loaders = {d: DataLoader(ds, batch_size=4) for d, ds in datasets.items()}
    for domains in (uneven, loaders):
        res = surface(model, loss, domains, dirs)
        for name in full:
            np.testing.assert_allclose(res.losses[name], ref.losses[name], rtol=1e-12)
            np.testing.assert_allclose(res.accuracies[name], ref.accuracies[name], atol=1e-15)
            assert res.num_samples[name] == 10
    # streamed, not copied: every grid point read the whole dataset again
    assert all(ds.reads >= 10 * 9 for ds in datasets.values())


def test_rebatching_and_subsampling_a_loader_equal_the_list():
    model, loss, full, params = CASES["batchnorm-ce-all"].build(n=11)
    dirs = random_directions(model, params, seed=0)
    loaders = {d: DataLoader(TensorDataset(*b[0]), batch_size=3) for d, b in full.items()}
    for options in ({"batch_size": 4}, {"subsample": 7, "seed": 3},
                    {"subsample": 7, "batch_size": 2}):  # fmt: skip
        want = surface(model, loss, full, dirs, **options)
        got = surface(model, loss, loaders, dirs, **options)
        for name in full:
            np.testing.assert_allclose(got.losses[name], want.losses[name], rtol=1e-12)
        assert got.settings["subsample_seeds"] == want.settings["subsample_seeds"]
        assert got.num_samples == want.num_samples


@pytest.mark.parametrize("case_id", ["groupnorm-ce-all", "batchnorm-ce-all"])
def test_filter_normalisation_per_output_channel(case_id):
    model, _, _, _ = CASES[case_id].build()
    dirs = random_directions(model, seed=0, normalization="filter")
    for name, p in model.named_parameters():
        for d in (dirs.d1[name], dirs.d2[name]):
            if p.dim() <= 1:  # biases and normalisation weights: not moved by default
                assert torch.count_nonzero(d) == 0
                continue
            got = d.reshape(d.shape[0], -1).norm(dim=1)
            want = p.detach().reshape(p.shape[0], -1).norm(dim=1)
            torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


def test_first_layer_shortcut_on_a_conv_net_is_one_line():
    model, loss, domains, _ = CASES["groupnorm-ce-all"].build(n=6)
    dirs = random_directions(model, seed=0)
    with pytest.raises(ValueError) as err:
        surface(model, loss, domains, dirs, first_layer=True)
    message = str(err.value)
    assert "\n" not in message and "first_layer='auto' or False" in message


@pytest.mark.parametrize("case_id", ["groupnorm-ce-head", "batchnorm-ce-all"])
def test_inconsistency_plane_of_a_conv_net_passes_through_the_maximiser(case_id):
    """Directions from I^eps of a conv net: the surface at (alpha, beta) = (1, 0) is every
    domain's true risk at theta* + the score's maximiser."""
    from landscape.inconsistency import DisplacedRisk, inconsistency_score
    from landscape.surface.directions import inconsistency_directions

    model, loss, domains, params = CASES[case_id].build(n=8)
    res = inconsistency_score(model, loss, domains, 1e-2, params, remedy="top-k", k=3,
                              check=False, progress=False)  # fmt: skip
    dirs = inconsistency_directions(res, model, params)
    surf = surface(model, loss, domains, dirs)
    for name, data in domains.items():
        want = DisplacedRisk(model, loss, data, params).value(res.direction)
        assert surf.losses[name][2, 1] == pytest.approx(want, rel=1e-12)


def test_recomputed_batch_norm_on_a_streamed_loader_equals_the_same_batches_in_a_list():
    """Recomputed statistics average the batches' own: a loader of batches of 4 gives the
    surface of the list cut at the same rows (and the brute-force loop's)."""
    model, loss, _, params = CASES["batchnorm-ce-all"].build(n=10)
    _, _, listed, _ = CASES["batchnorm-ce-all"].build(n=10, cuts={"d0": [4, 8], "d1": [4, 8]})
    loaders = {
        d: DataLoader(TensorDataset(torch.cat([b[0] for b in bs]), torch.cat([b[1] for b in bs])),
                      batch_size=4)
        for d, bs in listed.items()
    }  # fmt: skip
    dirs = random_directions(model, params, seed=2)
    want = surface(model, loss, listed, dirs, batch_norm="recompute")
    got = surface(model, loss, loaders, dirs, batch_norm="recompute")
    brute, _ = brute_force(model, loss, listed, dirs, AXIS, AXIS, bn_recompute=True)
    for name in listed:
        np.testing.assert_allclose(got.losses[name], want.losses[name], rtol=1e-12)
        np.testing.assert_allclose(got.losses[name], brute[name], rtol=1e-11)
