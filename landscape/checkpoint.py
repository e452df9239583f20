"""Safe checkpoints: weights in safetensors, metadata as JSON, atomic writes; and the one
entry point that loads any weights file (:func:`load_checkpoint`).

A checkpoint is one ``.safetensors`` file whose header carries the JSON metadata under the
key ``"landscape"`` (model spec, algorithm, hyperparameters, data spec, seed, step, ...), so
that :func:`load_checkpoint` rebuilds the model, and :func:`landscape.data.build_domains`
the domains, from the file alone. Loading never executes code from the file. A copy of the
metadata is written beside it as ``<name>.json`` for people to read; the header is the
authoritative one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from landscape.io import atomic_write, write_json
from landscape.models import build_model
from landscape.models.domainbed_checkpoint import is_domainbed_checkpoint, load_domainbed
from landscape.weights import (
    check_state_dict,
    load_state_dict_file,
    load_weights_into,
    read_torch_file,
    resolve_model,
)

__all__ = [
    "CHECKSUM_KEY",
    "FORMAT",
    "check_state_dict",
    "load_checkpoint",
    "load_tensors",
    "read_metadata",
    "save_checkpoint",
    "save_tensors",
    "tensors_sha256",
]

FORMAT = "landscape-checkpoint"
FORMAT_VERSION = 1

#: Metadata key of the SHA-256 of the tensors (:func:`tensors_sha256`), checked on load.
CHECKSUM_KEY = "tensors_sha256"


def tensors_sha256(tensors: dict[str, Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and raw bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_tensors(path: str | os.PathLike, tensors: dict[str, Tensor], metadata: dict) -> Path:
    """Write tensors and JSON metadata to a safetensors file, atomically.

    The metadata stored gets :data:`CHECKSUM_KEY`, the tensors' SHA-256, checked by
    :func:`load_tensors`.
    """
    path = Path(path)
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    metadata = {**metadata, CHECKSUM_KEY: tensors_sha256(flat)}
    blob = st_save(flat, metadata={"landscape": json.dumps(metadata, allow_nan=True)})
    atomic_write(path, lambda f: f.write(blob))
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata stored in a safetensors file's header (tensors are not read)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable safetensors checkpoint ({err})") from None
    if "landscape" not in header:
        raise ValueError(f"{path} has no landscape metadata; was it saved by save_checkpoint?")
    return json.loads(header["landscape"])


def load_tensors(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """``(tensors, metadata)`` from a file written by :func:`save_tensors`.

    Raises:
        ValueError: the tensors do not match the checksum stored with them (files written
            before checksums were stored have none and load unchecked).
    """
    metadata = read_metadata(path)
    try:
        tensors = st_load(Path(path).read_bytes())
    except (SafetensorError, ValueError) as err:
        raise ValueError(f"{path} is not a readable safetensors checkpoint ({err})") from None
    expected = metadata.get(CHECKSUM_KEY)
    if expected is not None and tensors_sha256(tensors) != expected:
        raise ValueError(
            f"{path} is corrupted: its tensors do not match the checksum saved with them; "
            "delete it and re-run the command that wrote it"
        )
    return {k: v.to(device) for k, v in tensors.items()}, metadata


def save_checkpoint(
    path: str | os.PathLike, model: nn.Module, metadata: dict[str, Any] | None = None
) -> Path:
    """Save ``model``'s state dict and ``metadata`` to ``path`` (``.safetensors``).

    The model must carry a ``spec`` (all :mod:`landscape.models` networks do) so that it can
    be rebuilt; it is stored as ``metadata["model_spec"]``.

    Returns:
        The checkpoint path. A readable ``<path>.json`` copy of the metadata is written too.
    """
    spec = getattr(model, "spec", None)
    if spec is None:
        raise ValueError(
            f"{type(model).__name__} has no .spec; build it with landscape.build_model so the "
            "checkpoint can rebuild it"
        )
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **(metadata or {})}
    meta["model_spec"] = spec
    state = model.state_dict()
    meta[CHECKSUM_KEY] = tensors_sha256(state)
    save_tensors(path, state, meta)
    write_json(path.with_suffix(".json"), meta)
    return path


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module | Callable[[], nn.Module] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    """Load the weights at ``path``; returns ``(model, metadata)``, the model in eval mode
    (analyses need deterministic passes) on ``device``.

    Three formats, told apart by the file (never by running code from it):

    * a **landscape checkpoint** (``.safetensors`` with landscape metadata, written by
      :func:`save_checkpoint`): the model is rebuilt from its ``model_spec``;
    * a **plain state dict**: a ``.safetensors`` file without landscape metadata, or a
      ``torch.save`` file (``.pt``, ``.pth``, ``.bin``, ...) of ``{name: tensor}``, possibly
      under ``"state_dict"`` / ``"model_state_dict"`` / ``"model"``; ``model`` is required;
      metadata ``{"format": "state_dict", ...}`` (:mod:`landscape.weights`);
    * a **DomainBed checkpoint** (``model.pkl``, ``model_step*.pkl``): the network its
      algorithm predicts with is rebuilt, metadata ``{"format": "domainbed", "dataset",
      "test_envs", ...}`` (:mod:`landscape.models.domainbed_checkpoint`).

    ``torch.save`` files are read with ``weights_only=True`` (tensors, plain values and numpy
    scalars only). ``model`` (an ``nn.Module`` or a zero-argument factory returning one)
    receives the weights instead of the rebuilt model; it must have the same names and
    shapes. The model takes the weights' dtype when they share one.

    Raises:
        FileNotFoundError: no such file.
        TypeError: ``model`` is not a module or a working factory.
        ValueError: an unreadable file, one that would run code, weights of another model,
            a DomainBed run of an unsupported algorithm or input shape (one line each).
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a weights file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"checkpoint {path} {what}")
    if path.suffix.lower() == ".safetensors":
        if not _has_landscape_metadata(path):
            return load_state_dict_file(path, model, device)
        return _load_landscape_checkpoint(path, model, device)
    saved = read_torch_file(path)
    if is_domainbed_checkpoint(saved):
        return load_domainbed(saved, path, model, device)
    return load_state_dict_file(path, model, device, loaded=saved)


def _has_landscape_metadata(path: Path) -> bool:
    """Whether a safetensors file carries landscape metadata (one line if unreadable)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return "landscape" in (f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable safetensors file ({err})") from None


def _load_landscape_checkpoint(
    path: Path, model: nn.Module | Callable[[], nn.Module] | None, device: str | torch.device
) -> tuple[nn.Module, dict[str, Any]]:
    """A checkpoint :func:`save_checkpoint` wrote (checksum checked)."""
    tensors, meta = load_tensors(path, device="cpu")
    if meta.get("format") != FORMAT or "model_spec" not in meta:
        raise ValueError(f"{path} is not a landscape checkpoint (no model_spec in its metadata)")
    net = build_model(meta["model_spec"]) if model is None else resolve_model(model)
    return load_weights_into(net, tensors, str(path), device), meta
