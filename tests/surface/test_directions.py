"""Tests for landscape.surface.directions: seeding, normalisation, saving, planes, trajectories."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from landscape.surface.directions import (
    Directions,
    inconsistency_directions,
    normalize_direction,
    plane_directions,
    random_directions,
    trajectory_directions,
)
from landscape.params import flatten
from tests.cases import make_mlp


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def _equal(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_directions_different_seed_different():
    model = make_mlp()
    a = random_directions(model, seed=7)
    b = random_directions(model, seed=7)
    c = random_directions(model, seed=8)
    assert _equal(a.d1, b.d1) and _equal(a.d2, b.d2)
    assert a.fingerprint() == b.fingerprint()
    assert not torch.equal(a.d1["featurizer.1.weight"], c.d1["featurizer.1.weight"])
    assert a.fingerprint() != c.fingerprint()
    assert a.seed == 7 and c.seed == 8
    # the two directions of one draw differ
    assert not torch.equal(a.d1["featurizer.1.weight"], a.d2["featurizer.1.weight"])


def test_none_normalization_is_the_seeded_gaussian():
    model = make_mlp()
    dirs = random_directions(model, normalization="none", seed=3, include_biases=True)
    g = torch.Generator().manual_seed(3)
    names = [n for n, _ in model.named_parameters()]
    expected1 = {
        n: torch.randn(p.shape, generator=g, dtype=torch.float64)
        for n, p in model.named_parameters()
    }
    expected2 = {
        n: torch.randn(p.shape, generator=g, dtype=torch.float64)
        for n, p in model.named_parameters()
    }
    assert dirs.names == names
    assert _equal(dirs.d1, expected1) and _equal(dirs.d2, expected2)


@pytest.mark.parametrize("make", [make_mlp, ConvNet], ids=["mlp", "conv+bn"])
def test_filter_normalized_directions_have_the_filter_norms_of_the_weights(make, dtype):
    model = make().to(dtype)
    dirs = random_directions(model, normalization="filter", seed=1)
    for n, p in model.named_parameters():
        for d in (dirs.d1[n], dirs.d2[n]):
            assert d.dtype == dtype
            if p.dim() <= 1:  # biases and batch-norm parameters: zero by default
                assert torch.count_nonzero(d) == 0
            else:
                torch.testing.assert_close(
                    d.reshape(d.shape[0], -1).norm(dim=1),
                    p.detach().reshape(p.shape[0], -1).norm(dim=1),
                )


def test_include_biases_and_layer_normalization():
    model = ConvNet()
    dirs = random_directions(model, normalization="layer", seed=2, include_biases=True)
    for n, p in model.named_parameters():
        torch.testing.assert_close(dirs.d1[n].norm(), p.detach().norm())
    # norm-layer weights (ones) get the norm of the weights, not zero
    assert torch.count_nonzero(dirs.d1["bn.weight"]) == 4


def test_filter_normalization_of_zero_filters_and_params_subset():
    w = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    d = torch.tensor([[1.0, 0.0], [2.0, 2.0]])
    out = normalize_direction(d, w, "filter")
    torch.testing.assert_close(out, torch.tensor([[5.0, 0.0], [0.0, 0.0]]))
    model = make_mlp()
    dirs = random_directions(model, params="classifier", seed=0)
    assert dirs.names == ["classifier.weight", "classifier.bias"]


def test_bad_inputs_give_clear_errors():
    model = make_mlp()
    with pytest.raises(ValueError, match="unknown normalization 'batch'; use one of filter"):
        random_directions(model, normalization="batch")
    with pytest.raises(TypeError, match="seed must be an int"):
        random_directions(model, seed=1.5)
    with pytest.raises(ValueError, match="no parameter named or prefixed 'head'"):
        random_directions(model, params="head")


def test_directions_from_another_model_are_rejected():
    dirs = random_directions(make_mlp(dim=6), seed=0)
    with pytest.raises(
        ValueError, match=r"built for another model: 'featurizer.1.weight' has shape"
    ):
        dirs.check_model(make_mlp(dim=7))
    with pytest.raises(ValueError, match="built for another model: it has no parameter"):
        dirs.check_model(nn.Sequential(nn.Linear(6, 1)))


def test_directions_save_and_load(tmp_path):
    model = make_mlp()
    dirs = random_directions(model, seed=5)
    dirs.save(tmp_path / "dirs")
    back = Directions.load(tmp_path / "dirs")
    assert _equal(back.d1, dirs.d1) and _equal(back.d2, dirs.d2)
    assert back.origin is None and back.seed == 5 and back.kind == "random"
    assert back.fingerprint() == dirs.fingerprint()
    assert back.describe()["normalization"] == "filter"

    plane = plane_directions(model, [make_mlp(seed=1), make_mlp(seed=2), make_mlp(seed=3)])
    plane.save(tmp_path / "plane.json")
    back = Directions.load(tmp_path / "plane.npz")
    assert _equal(back.origin, plane.origin)
    assert back.info["points"] == plane.info["points"]


def test_plane_through_three_checkpoints_passes_through_all_three():
    model = make_mlp()
    ckpts = [make_mlp(seed=s) for s in (1, 2, 3)]
    for origin in (0, 2):
        plane = plane_directions(model, ckpts, origin=origin, labels=["init", "erm", "fishr"])
        u, v, o = flatten(plane.d1), flatten(plane.d2), flatten(plane.origin)
        assert abs(float(torch.dot(u, v))) < 1e-12 * float(u.norm() * v.norm())
        torch.testing.assert_close(u.norm(), v.norm())
        for label, ckpt in zip(["init", "erm", "fishr"], ckpts, strict=True):
            a, b = plane.info["points"][label]
            torch.testing.assert_close(
                o + a * u + b * v, flatten(dict(ckpt.named_parameters())).detach()
            )
        assert plane.info["points"][["init", "erm", "fishr"][origin]] == [0.0, 0.0]


def test_plane_inputs_state_dicts_and_paths(tmp_path):
    from landscape.checkpoint import save_checkpoint

    model = make_mlp()
    a, b = make_mlp(seed=1), make_mlp(seed=2)
    path = save_checkpoint(tmp_path / "b", b, {})
    p1 = plane_directions(model, [a.state_dict(), path], seed=4)
    p2 = plane_directions(model, [a, b], seed=4)
    assert _equal(p1.d1, p2.d1) and _equal(p1.d2, p2.d2)
    assert p1.info["labels"] == ["checkpoint 0", "b"]
    # two checkpoints: seeded orthogonal second direction of the same length
    u, v = flatten(p1.d1), flatten(p1.d2)
    assert abs(float(torch.dot(u, v))) < 1e-10 * float(u.norm() * v.norm())
    torch.testing.assert_close(u.norm(), v.norm())
    p3 = plane_directions(model, [a, b], seed=5)
    assert not torch.equal(flatten(p3.d2), v) and p1.seed == 4


def test_plane_bad_inputs():
    model = make_mlp()
    a, b = make_mlp(seed=1), make_mlp(seed=2)
    with pytest.raises(ValueError, match="two or three checkpoints, got 1"):
        plane_directions(model, [a])
    with pytest.raises(ValueError, match="coincide"):
        plane_directions(model, [a, copy.deepcopy(a)])
    c = copy.deepcopy(a)
    with torch.no_grad():
        for pc, pa, pb in zip(c.parameters(), a.parameters(), b.parameters(), strict=True):
            pc.copy_(2 * pb - pa)  # on the line through a and b
    with pytest.raises(ValueError, match="collinear"):
        plane_directions(model, [a, b, c])
    with pytest.raises(
        ValueError, match="saved from another model: 'featurizer.1.weight' has shape"
    ):
        plane_directions(model, [a, make_mlp(dim=7)])
    with pytest.raises(TypeError, match="expected a model, a state dict or a checkpoint path"):
        plane_directions(model, [a, 3])


def test_trajectory_pca_recovers_a_planar_trajectory():
    torch.manual_seed(0)
    model = make_mlp()
    theta = flatten(dict(model.named_parameters())).detach()
    D = theta.numel()
    u, v = torch.randn(D, dtype=torch.float64), torch.randn(D, dtype=torch.float64)
    s = torch.linspace(0, 1, 6, dtype=torch.float64)
    states = []
    for t in range(6):
        vec = theta + (1 - s[t]) * 3 * u + torch.sin(3 * s[t]) * v
        from landscape.params import unflatten

        states.append(unflatten(vec, dict(model.named_parameters())))
    traj = trajectory_directions(model, states)
    coords = torch.as_tensor(traj.info["trajectory"])
    d1, d2, o = flatten(traj.d1), flatten(traj.d2), flatten(traj.origin)
    torch.testing.assert_close(d1.norm(), torch.tensor(1.0, dtype=torch.float64))
    assert abs(float(d1 @ d2)) < 1e-10
    for t in range(6):  # every checkpoint lies on the plane at its coordinates
        recon = o + coords[t, 0] * d1 + coords[t, 1] * d2
        torch.testing.assert_close(recon, flatten(states[t]))
    assert sum(traj.info["explained_variance_ratio"]) == pytest.approx(1.0)
    assert coords[-1].abs().max() < 1e-12  # the origin is the last checkpoint
    # against a NumPy PCA (centred SVD)
    M = torch.stack([flatten(st) for st in states]).numpy() - o.numpy()
    _, _, Vt = np.linalg.svd(M - M.mean(0), full_matrices=False)
    assert abs(abs(float(Vt[0] @ d1.numpy())) - 1) < 1e-10
    with pytest.raises(ValueError, match="at least 3 checkpoints"):
        trajectory_directions(model, states[:2])
    with pytest.raises(ValueError, match="fewer than two dimensions"):
        trajectory_directions(model, [states[0], states[1], states[1]], center=False)


def test_inconsistency_directions_from_a_result():
    model = make_mlp()
    named = dict(model.named_parameters())
    g = torch.Generator().manual_seed(0)
    direction = {n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in named.items()}
    result = SimpleNamespace(direction=direction, pair=("d0", "d1"), epsilon=0.1, score=2.0)
    dirs = inconsistency_directions(result, seed=3)
    assert _equal(dirs.d1, direction)
    u, v = flatten(dirs.d1), flatten(dirs.d2)
    assert abs(float(u @ v)) < 1e-10 * float(u.norm() * v.norm())
    torch.testing.assert_close(u.norm(), v.norm())
    assert dirs.info["pair"] == ["d0", "d1"] and dirs.seed == 3 and dirs.kind == "inconsistency"
    again = inconsistency_directions(result, seed=3)
    other = inconsistency_directions(result, seed=4)
    assert _equal(again.d2, dirs.d2) and not torch.equal(flatten(other.d2), v)
    # a flat vector on the head, split with the model
    head = torch.randn(5, generator=g, dtype=torch.float64)
    flat = SimpleNamespace(direction=head, pair=("d1", "d0"), params="classifier")
    dirs = inconsistency_directions(flat, model=model)
    assert dirs.names == ["classifier.weight", "classifier.bias"]
    torch.testing.assert_close(flatten(dirs.d1), head)
    with pytest.raises(ValueError, match="flat vector; pass model="):
        inconsistency_directions(flat)
    with pytest.raises(ValueError, match="no maximising direction"):
        inconsistency_directions(SimpleNamespace(direction=None, pair=("a", "b")))


def test_inconsistency_directions_from_inconsistency_score():
    from landscape.inconsistency import inconsistency_score
    from tests.cases import make_binary_domains

    model = make_mlp()
    domains = make_binary_domains(2)
    result = inconsistency_score(
        model,
        nn.BCEWithLogitsLoss(),
        domains,
        [0.1, 0.2],
        params="classifier",
        check=False,
        progress=False,
    )
    dirs = inconsistency_directions(result, seed=1, index=1)
    assert dirs.names == ["classifier.weight", "classifier.bias"]
    expected = result.direction_by_name(1)
    for n in dirs.names:
        np.testing.assert_array_equal(dirs.d1[n].numpy(), expected[n])
    assert dirs.info["pair"] == list(result.pair[1]) and dirs.info["epsilon"] == 0.2
    u, v = flatten(dirs.d1), flatten(dirs.d2)
    assert abs(float(u @ v)) < 1e-10 * float(u.norm() * v.norm())
    dirs.check_model(model)
    with pytest.raises(ValueError, match="index must pick one of the 2 values of epsilon"):
        inconsistency_directions(result, index=2)


def test_eigen_directions_are_the_top_hessian_eigenvectors():
    from landscape.surface.directions import eigen_directions
    from landscape.curvature.reference import dense_hessian
    from tests.cases import make_binary_domains

    model = make_mlp()
    domains = make_binary_domains(2)
    H = dense_hessian(model, nn.BCEWithLogitsLoss(), domains["d1"])
    evals, evecs = torch.linalg.eigh(H)
    dirs = eigen_directions(model, nn.BCEWithLogitsLoss(), domains, domain="d1", k=3, seed=2)
    assert dirs.kind == "eigen" and dirs.info["domain"] == "d1" and dirs.seed == 2
    np.testing.assert_allclose(dirs.info["eigenvalues"], evals.flip(0)[:3].numpy(), rtol=1e-6)
    for d, col in ((dirs.d1, -1), (dirs.d2, -2)):
        v = flatten(d)
        assert abs(abs(float(v @ evecs[:, col])) - 1.0) < 1e-6
        assert float(v[v.abs().argmax()]) > 0  # sign convention
    again = eigen_directions(model, nn.BCEWithLogitsLoss(), {"d1": domains["d1"]}, k=3, seed=2)
    assert _equal(again.d1, dirs.d1)
    with pytest.raises(ValueError, match="pass domain=... \\(one of d0, d1\\)"):
        eigen_directions(model, nn.BCEWithLogitsLoss(), domains)
    with pytest.raises(ValueError, match="unknown domain 'd7'; available: d0, d1"):
        eigen_directions(model, nn.BCEWithLogitsLoss(), domains, domain="d7")
    with pytest.raises(ValueError, match="k must be an integer >= 2"):
        eigen_directions(model, nn.BCEWithLogitsLoss(), domains, domain="d1", k=1)
