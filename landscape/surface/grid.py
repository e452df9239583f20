"""Grid coordinates :math:`(\\alpha_i, \\beta_j)` of a loss-surface slice.

An axis is ``(min, max, num)`` (``numpy.linspace``) or explicit coordinates; the default
grid is :math:`[-1, 1]^2` with 21 points per axis, or, when the directions carry points
(checkpoints on a plane, a trajectory), the box around them widened by a quarter of its
span on each side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from torch import Tensor

from landscape.surface.directions import Directions

__all__ = ["DEFAULT_GRID", "make_grid"]

DEFAULT_GRID = (-1.0, 1.0, 21)


def _linspace(spec: tuple, what: str) -> np.ndarray:
    lo, hi, num = (float(v) for v in spec)
    if not num.is_integer():
        raise ValueError(f"{what}: the number of points must be an integer, got {spec[2]!r}")
    if num < 1:
        raise ValueError(f"{what} has {int(num)} points; give at least one point per axis")
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{what}: bounds must be finite, got ({lo}, {hi})")
    if num > 1 and lo >= hi:
        raise ValueError(f"{what}: min {lo:g} must be below max {hi:g}")
    return np.linspace(lo, hi, int(num))


def _axis(spec, what: str) -> np.ndarray:
    """One axis ``[n]`` from a ``(min, max, num)`` tuple or an array of coordinates."""
    if isinstance(spec, tuple) and len(spec) == 3 and all(np.isscalar(v) for v in spec):
        return _linspace(spec, what)
    if isinstance(spec, Tensor):
        spec = spec.detach().cpu().numpy()
    try:
        arr = np.asarray(spec, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: cannot read {spec!r} as coordinates") from None
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array of coordinates, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{what} has 0 points; give at least one coordinate per axis")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} holds NaN or infinite coordinates")
    return arr


def make_grid(grid=None, directions: Directions | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates ``(alphas [A], betas [B])`` from a grid specification.

    Args:
        grid: ``None`` (default: covers the directions' points / trajectory with a margin
            when they have some, else :math:`[-1, 1]` with 21 points per axis); a spec
            ``(min, max, num)`` for both axes; two specs ``((min, max, num), (min, max,
            num))`` (tuples); or two arrays or lists ``(alphas, betas)``.
        directions: used for the default grid.

    Raises:
        ValueError: an axis with 0 points, non-finite values, ``min >= max``.

    Example:
        >>> alphas, betas = make_grid(((-1, 1, 3), [0.0, 0.5]))
        >>> alphas.tolist(), betas.tolist()
        ([-1.0, 0.0, 1.0], [0.0, 0.5])
    """
    if grid is None:
        spec = _default_spec(directions)
        return _axis(spec[0], "alpha grid"), _axis(spec[1], "beta grid")
    if isinstance(grid, Mapping):
        raise TypeError("grid must be (min, max, num), two such specs, or (alphas, betas)")
    if isinstance(grid, tuple | list) and len(grid) == 3 and all(np.isscalar(v) for v in grid):
        spec = tuple(grid)
        return _axis(spec, "alpha grid"), _axis(spec, "beta grid")
    if isinstance(grid, tuple | list) and len(grid) == 2:
        return _axis(grid[0], "alpha grid"), _axis(grid[1], "beta grid")
    raise ValueError(
        f"cannot read grid {grid!r}; use (min, max, num), ((min, max, num), (min, max, num)) "
        "or (alphas, betas)"
    )


def _default_spec(directions: Directions | None):
    """Two ``(min, max, 21)`` specs around the directions' points, or the default grid."""
    pts = []
    if directions is not None:
        info = directions.info
        if isinstance(info.get("points"), Mapping):
            pts += [list(map(float, p)) for p in info["points"].values()]
        if info.get("trajectory") is not None:
            pts += np.asarray(info["trajectory"], dtype=np.float64).tolist()
    if not pts:
        return DEFAULT_GRID, DEFAULT_GRID
    P = np.asarray(pts)
    spec = []
    for k in range(2):
        lo, hi = float(P[:, k].min()), float(P[:, k].max())
        span = max(hi - lo, 1e-3 * max(abs(lo), abs(hi), 1.0))
        spec.append((lo - 0.25 * span, hi + 0.25 * span, 21))
    return tuple(spec)
