"""Atomic file writes and the save / load format of every result (``.npz`` + ``.json``).

Nothing here unpickles: arrays are read with ``allow_pickle=False`` and settings are JSON.

A result is a dataclass deriving from :class:`SavedResult`. ``result.save("out/score")``
writes ``out/score.npz`` (every array, flattened to keys such as ``risks/+80%``) and
``out/score.json`` (everything else, with ``{"__array__": key}`` placeholders where arrays
were); ``Type.load("out/score")`` rebuilds an equal object.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T", bound="SavedResult")


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], binary: bool = True):
    """Write a file atomically: ``write(fileobj)`` fills a temporary file that then replaces
    ``path`` (so a crash never leaves a half-written file). Parent folders are created.
    Under torchrun only rank 0 writes (:func:`landscape.distributed.writes_here`); the other
    ranks skip the write."""
    from landscape.distributed.group import writes_here

    if not writes_here():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; honour the umask instead
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.device | torch.dtype):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically (NaN and infinities are kept)."""
    text = json.dumps(obj, indent=2, default=_json_default, allow_nan=True) + "\n"
    atomic_write(path, lambda f: f.write(text), binary=False)


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, with a clear error when it is missing or corrupted."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-create it") from None


def save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Save named arrays to a compressed ``.npz``, atomically."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` (never unpickles)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def _encode(obj: Any, key: str, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        arrays[key] = obj
        return {"__array__": key}
    if isinstance(obj, dict):
        return {str(k): _encode(v, f"{key}/{k}", arrays) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_encode(v, f"{key}/{i}", arrays) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return obj
    return obj


def _decode(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            return arrays[obj["__array__"]]
        return {k: _decode(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, arrays) for v in obj]
    return obj


def _stem(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".npz", ".json") else path


class SavedResult:
    """Mixin for result dataclasses: ``save(path)`` / ``load(path)`` as ``.npz`` + ``.json``.

    Arrays (NumPy or torch) anywhere inside the fields, also nested in dicts and lists, go
    to the ``.npz``; everything else goes to the ``.json``. Tuples come back as lists unless
    the subclass converts them in ``__post_init__``.
    """

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``<path>.npz`` and ``<path>.json``; returns the ``.json`` path."""
        stem = _stem(path)
        arrays: dict[str, np.ndarray] = {}
        fields = {
            f.name: _encode(getattr(self, f.name), f.name, arrays)
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
        }
        save_arrays(stem.with_suffix(".npz"), arrays)
        meta = {"type": type(self).__name__, "fields": fields}
        from landscape.distributed.shard import describe

        if (run := describe()) is not None:  # torchrun: world size, each rank's share
            meta["distributed"] = run
        write_json(stem.with_suffix(".json"), meta)
        return stem.with_suffix(".json")

    @classmethod
    def load(cls: type[T], path: str | os.PathLike) -> T:
        """Read a result written by :meth:`save` (``path`` with or without suffix)."""
        stem = _stem(path)
        meta = read_json(stem.with_suffix(".json"))
        if meta.get("type") != cls.__name__:
            raise ValueError(
                f"{stem.with_suffix('.json')} holds a {meta.get('type')!r}, not a {cls.__name__}"
            )
        arrays = load_arrays(stem.with_suffix(".npz"))
        return cls(**_decode(meta["fields"], arrays))
