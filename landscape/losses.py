"""Loss functions by name, so checkpoints can record and rebuild them.

* ``"bce"``: ``BCEWithLogitsLoss`` on logits ``[N, 1]`` and float 0/1 targets ``[N, 1]``
  (the Colored MNIST protocol);
* ``"ce"``: ``CrossEntropyLoss`` on logits ``[N, C]`` and integer targets ``[N]``;
* ``"mse"``: ``MSELoss`` (closed-form test cases: a linear model has Hessian 2/N·XᵀX).

All use ``reduction="mean"``: a domain's risk R_e is the mean loss over its samples.
"""

from __future__ import annotations

from torch import Tensor, nn

_LOSSES = {"bce": nn.BCEWithLogitsLoss, "ce": nn.CrossEntropyLoss, "mse": nn.MSELoss}


def build_loss(name: str, reduction: str = "mean") -> nn.Module:
    """The loss module called ``name`` (``"bce"``, ``"ce"`` or ``"mse"``)."""
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(_LOSSES)}")
    return _LOSSES[name](reduction=reduction)


def loss_name(loss_func: nn.Module) -> str:
    """The registry name of a loss module (inverse of :func:`build_loss`)."""
    for name, cls in _LOSSES.items():
        if type(loss_func) is cls:
            return name
    raise ValueError(
        f"unsupported loss {type(loss_func).__name__}; use one of "
        "BCEWithLogitsLoss, CrossEntropyLoss, MSELoss"
    )


def with_reduction(loss_func: nn.Module, reduction: str) -> nn.Module:
    """A copy of ``loss_func`` with another reduction (``"sum"`` gives per-sample gradients)."""
    return build_loss(loss_name(loss_func), reduction=reduction)


def accuracy(logits: Tensor, y: Tensor) -> Tensor:
    """Fraction of correct predictions: sign of the logit for ``[N, 1]``, argmax otherwise."""
    if logits.shape[-1] == 1:
        return ((logits > 0).to(y.dtype) == y).float().mean()
    return (logits.argmax(dim=-1) == y).float().mean()
