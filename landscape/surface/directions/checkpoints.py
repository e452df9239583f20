"""Parameters of checkpoints (models, state dicts or files) on the names of one model.

Planes and trajectories go through checkpoints; each is read here as float64 CPU tensors
for the selected parameter names, checked against the model's names and shapes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from landscape.params import ParamSpec, select_params

__all__ = ["checkpoint_states", "checkpoint_label"]


def _state_of(item, selected_names: list[str], what: str) -> dict[str, Tensor]:
    """Parameters ``{name: tensor}`` (float64, CPU) of a model, a state dict or a path."""
    if isinstance(item, nn.Module):
        state = {n: p.detach() for n, p in item.named_parameters()}
    elif isinstance(item, Mapping):
        state = {str(k): torch.as_tensor(v) for k, v in item.items()}
    elif isinstance(item, str | os.PathLike):
        from landscape.checkpoint import load_tensors  # noqa: PLC0415

        state, _ = load_tensors(item)
    else:
        raise TypeError(
            f"{what}: expected a model, a state dict or a checkpoint path, got "
            f"{type(item).__name__}"
        )
    missing = [n for n in selected_names if n not in state]
    if missing:
        raise ValueError(f"{what} was saved from another model: it has no parameter {missing[0]!r}")
    return {n: state[n].detach().to("cpu", torch.float64) for n in selected_names}


def checkpoint_states(
    model: nn.Module, checkpoints: Sequence, params: ParamSpec
) -> tuple[dict[str, Tensor], list[dict[str, Tensor]]]:
    """``(like, states)``: the model's selected parameters ``{name: tensor}`` (detached) and
    each checkpoint's values for them (float64, CPU).

    Raises:
        TypeError: a checkpoint is not a model, a state dict or a path.
        ValueError: a checkpoint lacks a name or has another shape.
    """
    selected = select_params(model, params)
    names = list(selected)
    states = []
    for i, c in enumerate(checkpoints):
        s = _state_of(c, names, f"checkpoint {i}")
        for n in names:
            if tuple(s[n].shape) != tuple(selected[n].shape):
                raise ValueError(
                    f"checkpoint {i} was saved from another model: {n!r} has shape "
                    f"{tuple(s[n].shape)}, the model expects {tuple(selected[n].shape)}"
                )
        states.append(s)
    return {n: selected[n].detach() for n in names}, states


def checkpoint_label(item, i: int, labels: Sequence[str] | None = None) -> str:
    """``labels[i]``, else a path's file name without suffix, else ``checkpoint i``."""
    if labels is not None:
        return str(labels[i])
    if isinstance(item, str | os.PathLike):
        return os.path.splitext(os.path.basename(os.fspath(item)))[0]
    return f"checkpoint {i}"
