"""The resumable state of a DomainBed-protocol run, as safetensors tensors + JSON metadata.

Written (atomically) at every evaluation, it holds everything the next update depends on:

* ``algorithm/<key>``: the algorithm's state dict (the network, ``update_count``, Fishr's
  moving averages ``ema_variance``);
* ``optimizer/<param index>/<key>``: Adam's moments and step (``param_groups`` in the
  metadata; non-tensor entries too);
* ``loader/<env index>``: each training domain's sampler generator state after the batches
  consumed (:class:`~landscape.training.minibatch.loaders.InfiniteLoader`);
* ``rng/torch``, ``rng/cuda/<k>``, ``rng/numpy``: the global streams (dropout, say), and
  Python's ``random`` state in the metadata;
* ``step``: the next update's index (the metadata).

Continuing from it gives, on the same device, the records and weights of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

STATE_FORMAT = "landscape-domainbed-state"


def optimizer_tensors(state: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """An optimizer's ``state_dict()`` as ``(tensors, JSON metadata)``."""
    tensors: dict[str, Tensor] = {}
    values: dict[str, dict[str, Any]] = {}
    for idx, entries in state["state"].items():
        values[str(idx)] = {}
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer/{idx}/{key}"] = value
                values[str(idx)][key] = None
            else:
                values[str(idx)][key] = value
    groups = [{**g, "params": list(g["params"])} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "state": values}


def optimizer_state(tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The ``state_dict()`` :func:`optimizer_tensors` stored."""
    state = {
        int(idx): {
            key: tensors[f"optimizer/{idx}/{key}"] if value is None else value
            for key, value in entries.items()
        }
        for idx, entries in meta["state"].items()
    }
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


def rng_tensors() -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The global random streams: torch (CPU and every CUDA device), NumPy and Python."""
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for k, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{k}"] = state
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (the global stream)
    tensors["rng/numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).view(np.int32))
    version, internal, gauss = random.getstate()
    meta = {
        "numpy": [name, int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss],
    }
    return tensors, meta


def restore_rng(tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
    """Set the global streams to what :func:`rng_tensors` saved."""
    torch.set_rng_state(tensors["rng/torch"])
    if torch.cuda.is_available():
        cuda = [tensors[f"rng/cuda/{k}"] for k in range(torch.cuda.device_count())
                if f"rng/cuda/{k}" in tensors]  # fmt: skip
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    name, pos, has_gauss, cached = meta["numpy"]
    keys = tensors["rng/numpy"].numpy().view(np.uint32)
    np.random.set_state((name, keys, pos, has_gauss, cached))  # noqa: NPY002
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Run a block with the global streams saved first and restored after (the caller's
    random state is left as it was, whatever the block seeds or draws)."""
    tensors, meta = rng_tensors()
    try:
        yield
    finally:
        restore_rng(tensors, meta)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch with ``seed``, as DomainBed's ``train.py``."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (DomainBed seeds the global stream)
    torch.manual_seed(seed)


def state_tensors(
    algorithm, loaders: Mapping[int, Any], step: int, config: Mapping[str, Any]
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Everything to continue at update ``step``: ``(tensors, metadata)`` (see the module)."""
    tensors = {f"algorithm/{k}": v for k, v in algorithm.state_dict().items()}
    opt_tensors, opt_meta = optimizer_tensors(algorithm.optimizer.state_dict())
    tensors.update(opt_tensors)
    for env_i, loader in loaders.items():
        tensors[f"loader/{env_i}"] = loader.state()
    rng, rng_meta = rng_tensors()
    tensors.update(rng)
    meta = {
        "format": STATE_FORMAT,
        "step": int(step),
        "config": dict(config),
        "optimizer": opt_meta,
        "rng": rng_meta,
        "loaders": sorted(int(i) for i in loaders),
    }
    return tensors, meta


def load_state(algorithm, loaders: Mapping[int, Any], tensors, meta) -> int:
    """Restore a state of :func:`state_tensors`; returns the step to continue at.

    Raises:
        ValueError: not a state of this protocol, or of other training domains.
    """
    if meta.get("format") != STATE_FORMAT:
        raise ValueError("not a DomainBed-protocol training state (another run's file?)")
    if meta.get("loaders") != sorted(int(i) for i in loaders):
        raise ValueError(
            f"the state trained on environments {meta.get('loaders')}, this run on "
            f"{sorted(loaders)}; choose another output folder (--out)"
        )
    prefix = "algorithm/"  # both load_state_dict calls move the tensors where they belong
    model = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    algorithm.load_training_state(model, optimizer_state(tensors, meta["optimizer"]))
    step = int(meta["step"])
    for env_i, loader in loaders.items():
        loader.restore(tensors[f"loader/{env_i}"], step)
    restore_rng(tensors, meta["rng"])
    return step
