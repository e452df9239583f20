"""Row-by-row storage of a surface, so that an interrupted computation resumes.

A folder holds ``surface_settings.json`` (the fingerprint of everything that determines the
numbers: grid, domains and a hash of their data, directions, model state, settings) and one
``row_<i>.npz`` per finished row of the grid (one :math:`\\alpha_i`, all :math:`\\beta_j`, all
domains). A call with the same fingerprint skips the rows already there, so the result
equals an uninterrupted run; another fingerprint in the same folder is a one-line
``ValueError`` naming the first setting that differs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.io import load_arrays, read_json, save_arrays, write_json
from landscape.surface.data import Domain
from landscape.surface.directions import Directions

__all__ = ["RowStore", "surface_fingerprint"]

SETTINGS_FILE = "surface_settings.json"


def _hash_tensors(tensors: Iterable[Tensor]) -> str:
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:16]


def surface_fingerprint(
    alphas: np.ndarray,
    betas: np.ndarray,
    domains: Mapping[str, Domain],
    directions: Directions,
    model: nn.Module,
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """What determines a surface's numbers, as JSON-friendly data (compared on resume)."""
    fingerprint = {
        "alphas": alphas.tolist(),
        "betas": betas.tolist(),
        "domains": list(domains),
        "num_samples": {n: d.num_samples for n, d in domains.items()},
        "data": {n: _hash_tensors(t for b in d.batches for t in b) for n, d in domains.items()},
        "directions": directions.fingerprint(),
        "model": _hash_tensors(
            [t for _, t in sorted(model.state_dict().items()) if torch.is_tensor(t)]
        ),
        **settings,
    }
    return json.loads(json.dumps(fingerprint))


class RowStore:
    """The finished rows of one surface in a folder (see the module docstring).

    Args:
        folder: where the rows go (created when missing).
        fingerprint: from :func:`surface_fingerprint`; written on first use, compared after.

    Raises:
        ValueError: the folder holds a surface with another fingerprint.
    """

    def __init__(self, folder: str | Path, fingerprint: dict[str, Any]):
        self.folder = Path(folder)
        settings_file = self.folder / SETTINGS_FILE
        if not settings_file.exists():
            write_json(settings_file, fingerprint)
            return
        stored = read_json(settings_file)
        if stored != fingerprint:
            key = next(
                (k for k in fingerprint if stored.get(k) != fingerprint[k]),
                next((k for k in stored if k not in fingerprint), "settings"),
            )
            raise ValueError(
                f"{self.folder} holds a surface computed with other settings ({key} differs); "
                "use another checkpoint_dir or delete it"
            )

    def _path(self, i: int) -> Path:
        return self.folder / f"row_{i:05d}.npz"

    def load(self, num_rows: int) -> dict[int, dict[str, np.ndarray]]:
        """``{i: row}`` of the rows ``i < num_rows`` already finished."""
        return {i: load_arrays(self._path(i)) for i in range(num_rows) if self._path(i).exists()}

    def save(self, i: int, row: dict[str, np.ndarray]) -> None:
        """Write row ``i`` (atomically)."""
        save_arrays(self._path(i), row)
