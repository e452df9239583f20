"""The first two principal components of a training trajectory, and its projection."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from landscape.params import ParamSpec, flatten
from landscape.surface.directions.base import Directions, unflatten_as
from landscape.surface.directions.checkpoints import checkpoint_label, checkpoint_states

__all__ = ["trajectory_directions"]


def _principal_plane(M: torch.Tensor, center: bool):
    """``(dirs [2, D], coords [T, 2], ratio [2])`` of the rows of ``M`` ``[T, D]``.

    The sign of each component makes the first row's coordinate non-positive.
    """
    A = M - M.mean(dim=0, keepdim=True) if center else M
    _, S, Vh = torch.linalg.svd(A, full_matrices=False)
    if len(S) < 2 or S[1] <= 1e-12 * max(float(S[0]), 1e-300):
        raise ValueError("the trajectory spans fewer than two dimensions; there is no plane")
    dirs = Vh[:2].clone()
    coords = M @ dirs.T  # [T, 2]
    for j in range(2):
        if coords[0, j] > 0:
            dirs[j] = -dirs[j]
            coords[:, j] = -coords[:, j]
    var = S**2
    return dirs, coords, (var[:2] / var.sum()).tolist()


def trajectory_directions(
    model: nn.Module,
    checkpoints: Sequence,
    params: ParamSpec = None,
    origin: int = -1,
    center: bool = True,
) -> Directions:
    """The first two principal components of a training trajectory, and its projection.

    With checkpoints :math:`\\theta_0, \\dots, \\theta_{T-1}` and origin
    :math:`\\theta_o` (the last one by default, as in Li et al. 2018), the rows of
    :math:`M = [\\theta_t - \\theta_o]_t` ``[T, D]`` are (optionally) centred and their top two
    right singular vectors :math:`\\delta, \\eta` (unit norm, orthogonal) are the
    directions. The trajectory's coordinates
    :math:`(\\langle\\Delta_t, \\delta\\rangle, \\langle\\Delta_t, \\eta\\rangle)`,
    :math:`\\Delta_t = \\theta_t - \\theta_o`, go to ``info["trajectory"]`` ``[T, 2]``
    with the explained variance ratios. The sign of each component is fixed so that the
    first checkpoint has non-positive coordinates (deterministic output).

    Args:
        model: a network of the same architecture.
        checkpoints: at least three models, state dicts or checkpoint paths, in training
            order.
        params: the parameters that move.
        origin: index of the checkpoint at the origin (default: the last).
        center: centre the rows before the SVD (sklearn's PCA, used by Li et al., does).
    """
    if not isinstance(checkpoints, Sequence) or isinstance(checkpoints, str | Mapping):
        raise TypeError("checkpoints must be a list of models / state dicts / paths")
    if len(checkpoints) < 3:
        raise ValueError(
            f"a trajectory needs at least 3 checkpoints for two principal components, got "
            f"{len(checkpoints)}"
        )
    T = len(checkpoints)
    if not (isinstance(origin, int) and -T <= origin < T):
        raise ValueError(f"origin must be an index of the {T} checkpoints, got {origin!r}")
    like, states = checkpoint_states(model, checkpoints, params)
    thetas = torch.stack([flatten(s) for s in states])
    o = thetas[origin]
    dirs, coords, ratio = _principal_plane(thetas - o, center)
    return Directions(
        d1=unflatten_as(dirs[0], like),
        d2=unflatten_as(dirs[1], like),
        origin=unflatten_as(o, like),
        kind="trajectory",
        seed=None,
        normalization="none",
        info={
            "trajectory": coords.numpy(),
            "explained_variance_ratio": ratio,
            "origin_index": origin % T,
            "centered": bool(center),
            "labels": [checkpoint_label(c, i) for i, c in enumerate(checkpoints)],
        },
    )
