"""Device choice: CUDA when present, CPU otherwise, ``--device`` to override."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` / ``None`` -> ``cuda`` if available else ``cpu``; otherwise as given.

    Raises:
        ValueError: CUDA was asked for but is not available, or the name is invalid.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"invalid device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} asked for, but CUDA is not available; use --device cpu"
        )
    return dev
