"""Guard rails run before any curvature work, and the small helpers every curvature module
shares.

Curvature of a domain's risk :math:`R_e(\\theta) = \\frac1N \\sum_i \\ell(f_\\theta(x_i), y_i)`
needs

* a supported, mean-reduced loss (:func:`check_loss`);
* a risk that is a deterministic function of the weights. A model in train mode is fine
  unless one of its modules behaves differently in train mode (dropout draws random masks,
  batch norm with running statistics normalises with the batch's statistics and updates its
  buffers): :func:`check_eval_mode` refuses exactly those, naming them, and never switches
  the model to eval mode silently. Any other source of randomness (a custom module whose
  forward depends on ``self.training``, noise in the data pass) is caught by
  :func:`check_deterministic`, which compares two forward passes, as curvlinops does;
* a model that :mod:`torch.func` can differentiate: a model extended by BackPACK is analysed
  through :func:`plain_copy`;
* a known curvature name (:func:`as_curvature`).
"""

from __future__ import annotations

import copy
from enum import Enum

import torch
from torch import Tensor, nn

from landscape.domains import Batch
from landscape.losses import loss_name

__all__ = [
    "Curvature",
    "as_curvature",
    "as_choice",
    "DETERMINISM_ROWS",
    "check_loss",
    "check_eval_mode",
    "check_deterministic",
    "train_mode_modules",
    "train_mode_named_modules",
    "is_backpack_extended",
    "plain_copy",
    "to_like",
]

DETERMINISM_ROWS = 256
"""Samples of the first batch that :func:`check_deterministic` runs twice."""


def to_like(t: Tensor, like: Tensor) -> Tensor:
    """Move ``t`` to ``like``'s device, and to its dtype if ``t`` is floating point (integer
    class labels keep their dtype)."""
    if t.is_floating_point():
        return t.to(device=like.device, dtype=like.dtype)
    return t.to(device=like.device)


_to = to_like  # the name the curvature modules used before


class Curvature(str, Enum):
    """Which curvature matrix of the risk an operator represents."""

    HESSIAN = "hessian"
    """The Hessian :math:`\\nabla^2_\\theta R_e` (indefinite away from a minimum)."""
    GGN = "ggn"
    """The generalised Gauss-Newton :math:`\\frac1N\\sum_i J_i^\\top\\Lambda_i J_i` (PSD for
    convex losses); for CE / BCE it equals the true Fisher of the model's predictive
    distribution."""
    EF = "ef"
    """The empirical Fisher :math:`\\frac1N\\sum_i g_i g_i^\\top` (uncentered gradient
    covariance; PSD)."""


def as_choice(value, choices: type[Enum], what: str):
    """The member of the string enum ``choices`` named by ``value`` (its value or the member
    itself); a one-line ``ValueError`` naming ``what`` and the choices otherwise."""
    try:
        return choices(getattr(value, "value", value))
    except ValueError:
        raise ValueError(
            f"unknown {what} {value!r}; use one of {', '.join(c.value for c in choices)}"
        ) from None


def as_curvature(curvature: str | Curvature) -> Curvature:
    """Parse a curvature name (``"hessian"``, ``"ggn"``, ``"ef"``) or enum member."""
    return as_choice(curvature, Curvature, "curvature")


def check_loss(loss_func: nn.Module) -> str:
    """Check that ``loss_func`` is a supported, mean-reduced loss; return its name.

    Raises:
        TypeError: not a loss module.
        ValueError: unsupported loss type, class weights, or a reduction other than mean.
    """
    if not isinstance(loss_func, nn.Module):
        raise TypeError(
            f"loss_func must be a loss module such as nn.BCEWithLogitsLoss(), "
            f"got {type(loss_func).__name__}"
        )
    name = loss_name(loss_func)
    if getattr(loss_func, "reduction", "mean") != "mean":
        raise ValueError(
            f"loss_func has reduction={loss_func.reduction!r}; curvature is of the mean loss "
            "R_e, pass a loss with reduction='mean'"
        )
    for attr in ("weight", "pos_weight"):
        if getattr(loss_func, attr, None) is not None:
            raise ValueError(f"loss_func has {attr} set; weighted losses are not supported")
    if float(getattr(loss_func, "label_smoothing", 0.0)) != 0.0:
        raise ValueError("loss_func uses label_smoothing; it is not supported, set it to 0")
    return name


def _differs_in_train_mode(module: nn.Module) -> bool:
    """Whether ``module``'s own forward is known to change with ``module.training``.

    Dropout (any ``_DropoutNd`` with ``p > 0``, and the ``dropout`` of recurrent layers and
    attention), and normalisation layers that track running statistics (batch norm and its
    lazy / sync variants, instance norm with ``track_running_stats=True``): in train mode
    they normalise with the batch's statistics and update the running buffers. A norm layer
    without running statistics uses the batch's statistics in both modes, so its mode does
    not matter.
    """
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return float(module.p) > 0.0
    if isinstance(module, nn.modules.batchnorm._NormBase):
        return bool(module.track_running_stats)
    if isinstance(module, (nn.RNNBase, nn.MultiheadAttention)):
        return float(module.dropout) > 0.0
    return False


def train_mode_named_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every module of ``model`` that is in train mode and behaves
    differently there (see :func:`check_eval_mode`), in model order: the package's one rule
    for when train mode matters (curvature, inconsistency and loss surfaces all use it)."""
    return [
        (name, m) for name, m in model.named_modules() if m.training and _differs_in_train_mode(m)
    ]


def train_mode_modules(model: nn.Module) -> list[str]:
    """``"Type (name)"`` of each module of :func:`train_mode_named_modules`."""
    return [
        f"{type(m).__name__} ({name or 'model'})" for name, m in train_mode_named_modules(model)
    ]


def check_eval_mode(model: nn.Module) -> None:
    """Raise a ``ValueError`` if a module of ``model`` is in train mode where that matters.

    Train mode matters only for modules whose forward changes with it: dropout (random
    masks) and batch norm with running statistics (batch statistics, buffer updates). A
    model in train mode without such modules (``nn.Linear(8, 1)`` fresh from its
    constructor) is accepted; a custom module whose forward depends on ``self.training`` in
    another way is caught by :func:`check_deterministic`. The model is never switched to
    eval mode silently.

    Example:
        >>> from torch import nn
        >>> check_eval_mode(nn.Linear(8, 1))  # train mode, but nothing depends on it
        >>> check_eval_mode(nn.Sequential(nn.Linear(8, 4), nn.Dropout(0.5)))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: model is in train mode with Dropout (1); call model.eval() before curvature ...
    """
    culprits = train_mode_modules(model)
    if culprits:
        more = f" and {len(culprits) - 3} more" if len(culprits) > 3 else ""
        raise ValueError(
            f"model is in train mode with {', '.join(culprits[:3])}{more}; call model.eval() "
            "before curvature work (these modules behave differently in train mode)"
        )


def _first_rows_output(model: nn.Module, batch: Batch, rows: int) -> Tensor:
    X = to_like(batch[0][:rows], next(model.parameters()))
    with torch.no_grad():
        return model(X)


def _require_finite(out: Tensor, domain: str | None) -> None:
    if not bool(torch.isfinite(out).all()):
        where = f"domain {domain!r}: " if domain is not None else ""
        raise ValueError(
            f"{where}the model's output is not finite at theta* (the unmoved weights) on "
            "batch 0, although its inputs are; check the weights for NaN or overflow before "
            "curvature work"
        )


def check_finite_output(
    model: nn.Module, domain: str | None, batch: Batch, rows: int = DETERMINISM_ROWS
) -> None:
    """Raise one ``ValueError`` naming ``domain`` if the model's output at θ* on the first
    ``rows`` samples of ``batch`` (finite inputs) holds a NaN or infinite value."""
    _require_finite(_first_rows_output(model, batch, rows), domain)


def check_deterministic(
    model: nn.Module, batch: Batch, rows: int = DETERMINISM_ROWS, domain: str | None = None
) -> None:
    """Raise a ``ValueError`` if two forward passes on ``batch`` give different outputs, or
    if the first is not finite (the :func:`check_finite_output` message, naming ``domain``).

    Only the first ``rows`` samples are used: random layers show on any sample, and two full
    forwards of a 25,000-sample domain in float64 cost more than the dense head Hessian
    (curvlinops' own check runs the whole data set twice with gradients, and two products).
    """
    first = _first_rows_output(model, batch, rows)
    _require_finite(first, domain)
    second = _first_rows_output(model, batch, rows)
    scale = float(first.abs().max()) if first.numel() else 0.0
    if not torch.allclose(first, second, rtol=1e-5, atol=1e-6 * (1.0 + scale)):
        hint = ""
        if any(m.training for m in model.modules()):
            hint = (
                "; the model is in train mode: if a module behaves differently there, call "
                "model.eval()"
            )
        raise ValueError(
            "two forward passes on the same batch gave different outputs; the data pass is "
            "not deterministic (random layers or augmentation?) - fix it before curvature "
            f"work{hint}"
        )


def is_backpack_extended(model: nn.Module) -> bool:
    """Whether ``backpack.extend`` has installed its hooks on any module of ``model``."""
    return any(getattr(m, "_backpack_extend", False) for m in model.modules())


def plain_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every BackPACK hook and stored tensor removed.

    BackPACK's ``extend`` mutates modules (hooks, stored ``input0`` / ``output``), and such
    modules cannot go through :mod:`torch.func`; the copy can. The original is untouched.
    """
    clone = copy.deepcopy(model)
    try:
        from backpack import hook_run_extensions, hook_store_io
    except ImportError:  # pragma: no cover - backpack is a dependency
        return clone
    backpack_hooks = (hook_store_io, hook_run_extensions)
    for module in clone.modules():
        for hooks in (module._forward_hooks, module._backward_hooks):
            for key in [k for k, h in hooks.items() if h in backpack_hooks]:
                del hooks[key]
        if not module._backward_hooks:
            module._is_full_backward_hook = None
        if hasattr(module, "_backpack_extend"):
            delattr(module, "_backpack_extend")
        for attr in [a for a in vars(module) if a == "output" or a.startswith("input")]:
            if attr == "output" or attr[5:].isdigit():
                delattr(module, attr)
    return clone
