"""Tests for landscape.surface.directions.trajectory: PCA of a trajectory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landscape.params import flatten
from landscape.surface.directions import (
    trajectory_directions,
)
from tests.cases import make_mlp


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
