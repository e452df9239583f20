"""The options of :func:`landscape.surface.loss_surface`, validated in one place."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["SurfaceOptions"]


def _positive_or_none(value, what: str) -> None:
    if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f"{what} must be a positive integer or None, got {value!r}")


@dataclass(frozen=True)
class SurfaceOptions:
    """How a surface is evaluated: data, accuracy, batch norm and the evaluation path.

    Every field is also accepted as a plain keyword argument of
    :func:`landscape.surface.loss_surface`.

    Attributes:
        subsample: evaluate each domain on this many samples drawn without replacement
            (seeded by ``seed`` and the domain's name, recorded); ``None`` = all.
        seed: seed of the subsampling.
        batch_size: split each domain's data in batches of this size (default: the
            domain's own batches, or one batch after subsampling).
        accuracy: compute accuracies (default: for classification losses only).
        batch_norm: ``"running"`` (default: eval mode with the model's running
            statistics) or ``"recompute"`` (each point's statistics on each domain's data).
        points_per_call: grid points per forward call (``vmap`` over stacked parameters
            when > 1); ``"auto"``: 1 on CPU, 16 on GPU.
        first_layer: use the first-linear-layer shortcut (``"auto"``: when
            :func:`landscape.surface.first_linear_layer` allows it and the layer has at
            least 8 inputs; ``True``: required; ``False``: never).
        frozen_prefix: when the plane moves the parameters of one submodule only (e.g. the
            head) and the model returns that submodule's output, evaluate the layers before
            it once per domain and run the submodule alone at each grid point
            (:mod:`~landscape.surface.prefix`; ``"auto"``: when it applies; ``True``:
            required; ``False``: never).

    Raises:
        ValueError: an unknown ``batch_norm``, ``first_layer`` or ``frozen_prefix``, a
            ``subsample``, ``batch_size`` or ``points_per_call`` that is not a positive
            integer.
    """

    subsample: int | None = None
    seed: int = 0
    batch_size: int | None = None
    accuracy: bool | None = None
    batch_norm: str = "running"
    points_per_call: int | str = "auto"
    first_layer: bool | str = "auto"
    frozen_prefix: bool | str = "auto"

    def __post_init__(self):
        if self.batch_norm not in ("running", "recompute"):
            raise ValueError(
                f"unknown batch_norm {self.batch_norm!r}; use 'running' or 'recompute'"
            )
        _positive_or_none(self.subsample, "subsample")
        _positive_or_none(self.batch_size, "batch_size")
        ppc = self.points_per_call
        if ppc != "auto" and (not isinstance(ppc, int) or ppc < 1):
            raise ValueError(f"points_per_call must be a positive integer or 'auto', got {ppc!r}")
        if self.first_layer not in ("auto", True, False):
            raise ValueError(f"first_layer must be 'auto', True or False, got {self.first_layer!r}")
        if self.frozen_prefix not in ("auto", True, False):
            raise ValueError(
                f"frozen_prefix must be 'auto', True or False, got {self.frozen_prefix!r}"
            )

    @classmethod
    def merge(cls, options: SurfaceOptions | None, overrides: Mapping[str, Any]) -> SurfaceOptions:
        """``options`` (default: the defaults) with the plain keyword arguments applied.

        Raises:
            TypeError: a keyword that is not an option, or ``options`` of another type.
        """
        if options is not None and not isinstance(options, SurfaceOptions):
            raise TypeError(f"options must be a SurfaceOptions, got {type(options).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in overrides if k not in known]
        if unknown:
            raise TypeError(
                f"loss_surface() got an unexpected keyword argument {unknown[0]!r}; options "
                f"are {', '.join(sorted(known))}"
            )
        return dataclasses.replace(options or cls(), **overrides)

    def resolve_points_per_call(self, device: torch.device, recompute: bool) -> int:
        """Points per call on ``device`` (``"auto"``: 16 on CUDA unless batch norm is
        recomputed, else 1).

        Raises:
            ValueError: more than one point per call with recomputed batch-norm statistics.
        """
        ppc = self.points_per_call
        if ppc == "auto":
            ppc = 16 if device.type == "cuda" and self.batch_norm != "recompute" else 1
        if recompute and ppc > 1:
            raise ValueError(
                "batch_norm='recompute' evaluates one grid point per call; use points_per_call=1"
            )
        return ppc
