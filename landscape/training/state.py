"""The resumable state of one (algorithm, restart) run, as safetensors tensors + JSON.

Nothing random happens during a step (full batch, no dropout), so the state holds no RNG
state: the weights (``model/<name>``), Adam's state (``optim/<param index>/<key>``), the
:class:`~landscape.training.penalties.Penalties` state (``penalties/<name>``, Fishr's moving
averages), the step and the history rows (``history``, float64 ``[steps, columns]``) suffice
for a bit-identical continuation.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from landscape.training.trainer import Trainer

STATE_FORMAT = "landscape-train-state"


def state_tensors(trainer: Trainer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Everything needed to continue ``trainer`` bit-identically: ``(tensors, metadata)``."""
    tensors: dict[str, Tensor] = {f"model/{k}": v for k, v in trainer.model.state_dict().items()}
    opt = trainer.optimizer.state_dict()
    state_keys: dict[str, list[str]] = {}
    for idx, state in opt["state"].items():
        state_keys[str(idx)] = []
        for key, value in state.items():
            if not isinstance(value, Tensor):
                raise TypeError(f"unexpected non-tensor Adam state {key!r}")
            tensors[f"optim/{idx}/{key}"] = value
            state_keys[str(idx)].append(key)
    for k, v in trainer.penalties.state_dict().items():
        tensors[f"penalties/{k}"] = v
    rows = trainer.rows
    columns = list(rows[0]) if rows else []
    if rows:
        tensors["history"] = torch.tensor(
            [[r.get(c, math.nan) for c in columns] for r in rows], dtype=torch.float64
        )
    meta = {
        "format": STATE_FORMAT,
        "algorithm": trainer.algorithm,
        "restart": trainer.restart,
        "seed": trainer.seed,
        "step": trainer.step,
        "config": trainer.config.to_dict(),
        "model_spec": trainer.model_spec,
        "optim_param_groups": opt["param_groups"],
        "optim_state_keys": state_keys,
        "history_columns": columns,
    }
    return tensors, meta


def _part(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    n = len(prefix)
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_state(trainer: Trainer, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Restore into ``trainer`` a state written by :func:`state_tensors`.

    Raises:
        ValueError: not a training state, or the state of another (algorithm, restart).
    """
    if meta.get("format") != STATE_FORMAT:
        raise ValueError("not a landscape training state file")
    if meta["algorithm"] != trainer.algorithm or meta["restart"] != trainer.restart:
        raise ValueError(
            f"state of {meta['algorithm']} restart {meta['restart']}, expected "
            f"{trainer.algorithm} restart {trainer.restart}"
        )
    device = next(trainer.model.parameters()).device
    trainer.model.load_state_dict({k: v.to(device) for k, v in _part(tensors, "model/").items()})
    groups = []
    for g in meta["optim_param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    state = {
        int(idx): {key: tensors[f"optim/{idx}/{key}"] for key in keys}
        for idx, keys in meta["optim_state_keys"].items()
    }
    trainer.optimizer = trainer.new_optimizer()
    trainer.optimizer.load_state_dict({"state": state, "param_groups": groups})
    pen = _part(tensors, "penalties/")
    trainer.penalties.load_state_dict({k: v.to(device) for k, v in pen.items()})
    trainer.step = int(meta["step"])
    columns = meta["history_columns"]
    if "history" in tensors:
        trainer.rows = [
            dict(zip(columns, map(float, r), strict=True)) for r in tensors["history"].tolist()
        ]
    else:
        trainer.rows = []
