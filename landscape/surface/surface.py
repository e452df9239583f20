"""The orchestrator :func:`loss_surface`: validate, resolve once, evaluate rows, assemble."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from landscape.distributed import every_rank_writes
from landscape.distributed.surface import check_plane, gather_rows, owned_rows
from landscape.surface.batchnorm import batch_norm_layers
from landscape.surface.data import Domain, prepare_domains
from landscape.surface.directions import Directions
from landscape.surface.evaluators import Evaluator, check_mode, loss_reduction, wants_accuracy
from landscape.surface.first_layer import FirstLayer, choose_first_layer
from landscape.surface.grid import make_grid
from landscape.surface.options import SurfaceOptions
from landscape.surface.plane import Plane
from landscape.surface.prefix import frozen_prefix, head_plane
from landscape.surface.result import SurfaceResult
from landscape.surface.store import RowStore, surface_fingerprint

__all__ = ["loss_surface"]


def _evaluator(
    model, loss_func, plane: Plane, domains: dict[str, Domain], opts: SurfaceOptions, seeds
):
    """``(evaluator, plane, domains, settings)``: the evaluation path and what it needs
    (``seeds``: the subsampling seeds, recorded in the settings).

    With the frozen-prefix shortcut, the evaluator runs the moving submodule alone on each
    domain's cached inputs; with the first-layer shortcut, the layer's weight leaves the
    plane and each domain gets its precomputed products.
    """
    layers = batch_norm_layers(model)
    recompute = opts.batch_norm == "recompute" and bool(layers)
    points_per_call = opts.resolve_points_per_call(plane.device, recompute)
    model, plane, domains, prefix_name = _frozen_prefix(model, plane, domains, opts, recompute)
    first_name, option = None, opts.first_layer
    if option == "auto" and any(d.streamed for d in domains.values()):
        option = False  # its products would hold a streamed domain's layer output in memory
    if not recompute:
        probe = next(iter(domains.values())).first_batch()[0][:2]
        first_name = choose_first_layer(model, probe, option)
    shortcut = FirstLayer(model, first_name) if first_name is not None else None
    if shortcut is not None:
        domains = {n: shortcut.attach(d, plane) for n, d in domains.items()}
        plane = plane.without(shortcut.weight_name)
    evaluator = Evaluator(
        model,
        loss_func,
        reduction=loss_reduction(loss_func),
        accuracy=wants_accuracy(loss_func, opts.accuracy),
        first_layer=shortcut,
        batch_norm=tuple(layers) if recompute else (),
    )
    path = (
        ("prefix+" if prefix_name is not None else "")
        + ("first_layer" if shortcut is not None else "plain")
        + ("+vmap" if points_per_call > 1 else "")
    )
    settings = {
        "loss": type(loss_func).__name__,
        "reduction": evaluator.reduction,
        "subsample": opts.subsample,
        "subsample_seeds": seeds,
        "seed": opts.seed,
        "batch_size": opts.batch_size,
        "batch_norm": opts.batch_norm if layers else "none (no batch norm)",
        "path": path,
        "frozen_prefix": prefix_name,
        "first_layer": _full_name(prefix_name, first_name),
        "points_per_call": points_per_call,
        "accuracy": evaluator.accuracy,
        "device": str(plane.device),
        "dtype": str(plane.dtype).replace("torch.", ""),
    }
    return evaluator, plane, domains, settings


def _full_name(prefix_name: str | None, name: str | None) -> str | None:
    """``name`` (a module of the evaluated model) as named in the user's model."""
    if name is None or prefix_name is None:
        return name
    return ".".join(part for part in (prefix_name, name) if part)


def _frozen_prefix(model, plane: Plane, domains: dict[str, Domain], opts: SurfaceOptions,
                   recompute: bool):  # fmt: skip
    """``(model, plane, domains, name)``: with the frozen-prefix shortcut
    (:mod:`~landscape.surface.prefix`) the head, its plane and each domain's cached inputs,
    and its name; else the arguments unchanged and ``None``.

    Raises:
        ValueError: ``frozen_prefix=True`` where the shortcut does not apply.
    """
    found = None
    if opts.frozen_prefix is not False and not recompute:
        if not any(d.streamed for d in domains.values()):  # cached inputs would fill memory
            found = frozen_prefix(model, plane, domains)
    if found is None:
        if opts.frozen_prefix is True:
            raise ValueError(
                "frozen_prefix=True, but the plane does not move one submodule that returns "
                "the model's output (or batch norm is recomputed, or a domain is streamed); "
                "use frozen_prefix='auto' or False"
            )
        return model, plane, domains, None
    head, cached = found
    return head.module, head_plane(head, plane), cached, head.name


def _check_arguments(model, loss_func, directions) -> None:
    """One-line errors for directions of another type or model, a model in train mode, a
    loss reduction other than mean or sum."""
    if not isinstance(directions, Directions):
        raise TypeError(
            f"directions must be a landscape Directions (e.g. random_directions(model)), got "
            f"{type(directions).__name__}"
        )
    directions.check_model(model)
    check_mode(model)
    loss_reduction(loss_func)


def loss_surface(
    model: nn.Module,
    loss_func: nn.Module,
    domains,
    directions: Directions,
    grid=None,
    *,
    options: SurfaceOptions | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    **option_kwargs: Any,
) -> SurfaceResult:
    """Loss and accuracy of every domain on a 2D grid of one plane.

    Args:
        model: the network, in eval mode (see the package docstring on batch norm); its
            parameters are the origin :math:`\\theta_0` unless ``directions.origin`` fixes
            one. It is not modified: parameters, ``requires_grad`` flags and modes are the
            same afterwards.
        loss_func: the loss (``reduction="mean"`` or ``"sum"``; the risk is the mean over
            all samples either way, batches weighted by their size).
        domains: ``{name: data}`` (see :mod:`landscape.domains`); all share the plane. A
            DataLoader is streamed (read again at each point, one batch in memory).
        directions: from :mod:`landscape.surface.directions` (names and shapes must match the
            model).
        grid: see :func:`landscape.surface.make_grid`; default :math:`[-1, 1]^2`, 21 x 21 (or
            covering the directions' checkpoints / trajectory).
        options: a :class:`~landscape.surface.SurfaceOptions`; its fields are also accepted
            as plain keyword arguments (``subsample``, ``seed``, ``batch_size``,
            ``accuracy``, ``batch_norm``, ``points_per_call``, ``first_layer``), which
            override it.
        checkpoint_dir: folder where finished rows are saved, for resuming.
        progress: show a tqdm progress bar.
        **option_kwargs: fields of :class:`~landscape.surface.SurfaceOptions`.

    Returns:
        A :class:`~landscape.surface.SurfaceResult`.

    Raises:
        ValueError: empty grid, unknown option, directions built for another model, model
            in train mode, NaN loss, a checkpoint folder with other settings.
        TypeError: directions of another type, an unknown keyword argument.

    Example:
        >>> import torch
        >>> from landscape.surface.directions import random_directions
        >>> model = torch.nn.Linear(2, 1).double().eval()
        >>> X = torch.randn(8, 2, dtype=torch.float64)
        >>> dirs = random_directions(model, seed=0)
        >>> res = loss_surface(model, torch.nn.MSELoss(), {"a": (X, X[:, :1])}, dirs,
        ...                    grid=(-1, 1, 3), progress=False)
        >>> res.losses["a"].shape
        (3, 3)
    """
    opts = SurfaceOptions.merge(options, option_kwargs)
    _check_arguments(model, loss_func, directions)
    check_plane(model, directions)  # torchrun: every rank holds the same plane
    alphas, betas = make_grid(grid, directions)
    plane = Plane.resolve(model, directions)
    prepared, seeds = prepare_domains(
        domains, opts.subsample, opts.seed, opts.batch_size, plane.device, plane.dtype
    )
    evaluator, plane, data, settings = _evaluator(model, loss_func, plane, prepared, opts, seeds)
    store = None
    if checkpoint_dir is not None:
        fingerprint = surface_fingerprint(alphas, betas, prepared, directions, model, settings)
        store = RowStore(checkpoint_dir, fingerprint)
    rows = _rows(evaluator, plane, data, alphas, betas, settings, store, progress)
    return SurfaceResult.from_rows(
        alphas,
        betas,
        [rows[i] for i in range(len(alphas))],
        {n: d.num_samples for n, d in data.items()},
        accuracy=evaluator.accuracy,
        directions=directions.describe(),
        settings=settings,
    )


def _rows(evaluator, plane, data, alphas, betas, settings, store, progress) -> dict[int, dict]:
    """Every row of the grid, ``{i: row}``: those ``store`` holds already, the others
    evaluated (and saved to ``store`` as each finishes)."""
    rows: dict[int, dict] = store.load(len(alphas)) if store is not None else {}
    mine = owned_rows(len(alphas))  # torchrun: rows dealt to ranks (all of them on one)
    bar = tqdm(
        total=len(mine) * len(betas) * len(data),
        initial=sum(i in rows for i in mine) * len(betas) * len(data),
        disable=not progress,
        desc="loss surface",
        unit="pt",
    )
    with torch.no_grad(), bar:
        for i in mine:
            if i not in rows:
                rows[i] = evaluator.row(
                    plane, data, alphas[i], betas, settings["points_per_call"], bar
                )
                if store is not None:
                    with every_rank_writes():  # each rank its own rows
                        store.save(i, rows[i])
    return gather_rows(rows, mine, list(data), (len(alphas), len(betas)))
