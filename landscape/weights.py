"""Weights files landscape did not write: read them without running code from them.

:func:`landscape.checkpoint.load_checkpoint` reads three formats; this module holds what the
two foreign ones share:

* :func:`read_torch_file`: a ``torch.save`` file (``.pt``, ``.pth``, ``.bin``, DomainBed's
  ``.pkl``) read with ``torch.load(..., weights_only=True)``, whose unpickler only builds
  tensors and plain containers. The numpy scalars and dtypes that DomainBed's hparams hold
  are added to its allow-list for the duration of the call (:func:`numpy_scalar_globals`);
  any other object in the file is refused, and nothing from the file is executed;
* :func:`load_state_dict_file`: a plain state dict (``.safetensors`` or a ``torch.save``
  file, possibly wrapped as ``{"state_dict": ...}`` or ``{"model": ...}``) loaded into a
  model the caller gives (:func:`resolve_model`: an ``nn.Module`` or a factory);
* :func:`check_state_dict` / :func:`load_weights_into`: every name and shape must match
  (after :func:`strip_wrapper_prefix` removed a ``DataParallel`` ``module.`` prefix).
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

#: Suffixes of ``torch.save`` state dicts (``.safetensors`` is the other plain format).
STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin")

#: Keys under which training scripts commonly wrap a state dict (checked in this order).
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")

FORMAT = "state_dict"


def numpy_scalar_globals() -> list:
    """The numpy globals a pickled numpy scalar needs: ``scalar``, ``dtype`` and the dtype
    classes of the bool, integer, float and string types (``np.float64(0.1)`` in DomainBed's
    random hparams). Files written with numpy 1 name ``numpy.core.multiarray.scalar``,
    with numpy 2 ``numpy._core.multiarray.scalar``: both are accepted."""
    import numpy as np  # noqa: PLC0415

    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    types = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8)
    types += (np.float16, np.float32, np.float64, np.str_)
    dtype_classes = {type(np.dtype(t)) for t in types} - {np.dtype}
    return [
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
        *sorted(dtype_classes, key=lambda c: c.__name__),
    ]


def _unpickler_detail(err: Exception) -> str:
    """The line of a ``torch.load`` error that names the problem (its message is long)."""
    text = str(err)
    found = re.search(r"(Unsupported [^\n]*?)(?: was not an allowed global.*)?$", text, re.M)
    if found:
        return found.group(1).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def read_torch_file(path: str | os.PathLike) -> Any:
    """The object a ``torch.save`` file holds, read without executing code from it.

    Raises:
        FileNotFoundError: no such file.
        ValueError: one line: the file holds an object other than tensors, plain Python
            values and numpy scalars (loading it would run code), or is no ``torch.save``
            file at all.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(numpy_scalar_globals()):
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4"
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = re.search(r"GLOBAL ([\w.]+)", str(err))
        if refused:
            raise ValueError(
                f"{path} was not loaded: it holds a {refused.group(1)} object, and unpickling "
                "it would run code from the file; save only tensors "
                "(torch.save(model.state_dict(), ...) or safetensors)"
            ) from None
        detail = f"UnpicklingError: {_unpickler_detail(err)}"
    except Exception as err:  # noqa: BLE001 - a corrupt file raises anything
        detail = f"{type(err).__name__}: {_unpickler_detail(err)}"
    raise ValueError(f"{path} is not a readable PyTorch file ({detail})")


def resolve_model(model: nn.Module | Callable[[], nn.Module]) -> nn.Module:
    """``model`` itself, or what the zero-argument factory ``model`` returns.

    Raises:
        TypeError: neither a module nor a factory, or the factory returns something else
            or raises (one line naming the factory and its error).
    """
    if isinstance(model, nn.Module):
        return model
    if not callable(model):
        raise TypeError(
            f"model must be an nn.Module or a factory returning one, got {type(model).__name__}"
        )
    name = getattr(model, "__qualname__", type(model).__name__)
    try:
        built = model()
    except Exception as err:  # noqa: BLE001 - the user's code raises anything
        raise TypeError(f"the model factory {name}() raised {type(err).__name__}: {err}") from None
    if not isinstance(built, nn.Module):
        raise TypeError(
            f"the model factory {name}() returned a {type(built).__name__}, "
            "expected a torch.nn.Module"
        )
    return built


def check_state_dict(model: nn.Module, tensors: Mapping[str, Tensor], source: str) -> None:
    """Raise a one-line ``ValueError`` if ``tensors`` do not match ``model``'s state dict."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}")
        if wrong:
            k = wrong[0]
            parts.append(f"{k} has shape {found[k]}, the model expects {expected[k]}")
        raise ValueError(f"{source} was saved from another model: {'; '.join(parts)}")


def load_weights_into(
    model: nn.Module, tensors: Mapping[str, Tensor], source: str, device: str | torch.device
) -> nn.Module:
    """Load ``tensors`` into ``model`` (checked), on ``device``, in eval mode.

    The model takes the tensors' floating dtype when they all share one (float64 weights
    make a float64 model), so that loading never rounds them.
    """
    check_state_dict(model, tensors, source)
    dtypes = {v.dtype for v in tensors.values() if v.is_floating_point()}
    if len(dtypes) == 1:
        model = model.to(dtypes.pop())
    model.load_state_dict(dict(tensors))
    return model.to(device).eval()


def unwrap_state_dict(obj: Any, source: str) -> tuple[dict[str, Tensor], str | None]:
    """``(state_dict, wrapper_key)`` from a loaded object: the dict of tensors itself, or
    the one under :data:`WRAPPER_KEYS` (``wrapper_key`` then names it).

    Raises:
        ValueError: no ``{name: tensor}`` mapping is found.
    """
    if isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        return dict(obj), None
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner:
                if all(isinstance(v, Tensor) for v in inner.values()):
                    return dict(inner), key
    what = (
        f"a dict with keys {sorted(map(str, obj))[:5]}"
        if isinstance(obj, Mapping)
        else (f"a {type(obj).__name__}")
    )
    raise ValueError(
        f"{source} holds {what}, not a state dict {{name: tensor}} (nor one under "
        f"{', '.join(repr(k) for k in WRAPPER_KEYS)})"
    )


def strip_wrapper_prefix(
    model: nn.Module, tensors: dict[str, Tensor]
) -> tuple[dict[str, Tensor], str | None]:
    """``(tensors, prefix)``: the names without the ``module.`` that ``DataParallel`` /
    ``DistributedDataParallel`` put before every key, when that makes them the model's
    (``prefix`` then says so); the tensors unchanged otherwise."""
    prefix = "module."
    expected = set(model.state_dict())
    if not tensors or set(tensors) == expected or not all(k.startswith(prefix) for k in tensors):
        return tensors, None
    stripped = {k[len(prefix) :]: v for k, v in tensors.items()}
    return (stripped, prefix) if set(stripped) == expected else (tensors, None)


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """``(tensors, header metadata)`` of a safetensors file, one line if unreadable."""
    from safetensors import SafetensorError, safe_open  # noqa: PLC0415

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable safetensors file ({err})") from None


def load_state_dict_file(
    path: str | os.PathLike,
    model: nn.Module | Callable[[], nn.Module] | None,
    device: str | torch.device = "cpu",
    loaded: Any = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load the plain state dict at ``path`` into ``model``; returns ``(model, metadata)``.

    Args:
        path: a ``.safetensors`` file, or a ``torch.save`` file of a state dict.
        model: the network the weights belong to (an ``nn.Module`` or a factory).
        device: where the model is returned (in eval mode).
        loaded: the object :func:`read_torch_file` already read from ``path``, if any.

    Returns:
        The model, and ``{"format": "state_dict", "source": ..., "wrapper_key": ...,
        "stripped_prefix": ...}`` (see :func:`unwrap_state_dict`, :func:`strip_wrapper_prefix`;
        with ``"header"``, the safetensors header's own metadata, when it has any).

    Raises:
        ValueError: no model given, not a state dict, or one of another model (one line).
    """
    path = Path(path)
    if model is None:
        raise ValueError(
            f"{path} holds plain weights (a state dict): give the network they belong to, "
            "load_checkpoint(path, model=...) (--model path/to/file.py:callable)"
        )
    meta: dict[str, Any] = {"format": FORMAT, "source": str(path), "wrapper_key": None}
    if path.suffix.lower() == ".safetensors":
        tensors, header = _read_safetensors(path)
        if header:
            meta["header"] = header
    else:
        obj = read_torch_file(path) if loaded is None else loaded
        tensors, meta["wrapper_key"] = unwrap_state_dict(obj, str(path))
    net = resolve_model(model)
    tensors, meta["stripped_prefix"] = strip_wrapper_prefix(net, tensors)
    return load_weights_into(net, tensors, str(path), device), meta
