"""Where and on how many threads the work runs.

* :func:`resolve_device`: CUDA when present, CPU otherwise, ``--device`` to override.
* :func:`set_threads`: one thread count for torch's intra-op pool **and** the BLAS / OpenMP
  pools that NumPy and SciPy use (``eigh``, dense products), through ``threadpoolctl``.
  Torch's ``set_num_threads`` does not reach SciPy's OpenBLAS: on a loaded 2-core machine the
  dense head I^ε (a 391 × 391 generalized eigenproblem) took 2.4–10 s with OpenBLAS's
  default threads and 0.54 s with one. Every ``landscape`` command takes ``--threads N``
  (default :func:`default_threads`).
"""

from __future__ import annotations

import os

import torch

#: At most this many threads by default: beyond it, the small dense problems of this
#: package (a few thousand parameters) gain nothing and a shared machine loses.
MAX_DEFAULT_THREADS = 16


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


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity; ``os.cpu_count()`` where unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """The thread count used when none is chosen.

    ``$OMP_NUM_THREADS`` when it is set to a positive integer (``torchrun`` sets it to 1 per
    process, ``make test`` to 1), else the cores available to this process, at most
    :data:`MAX_DEFAULT_THREADS`.
    """
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(available_cores(), MAX_DEFAULT_THREADS))


class ThreadLimits:
    """The thread count set by :func:`set_threads`; as a context manager, restores on exit.

    Attributes:
        threads: the count that was set.
    """

    def __init__(self, threads: int, previous_torch: int, blas_limits) -> None:
        self.threads = threads
        self._previous_torch = previous_torch
        self._blas_limits = blas_limits

    def restore(self) -> None:
        """Put back the torch and BLAS / OpenMP thread counts from before :func:`set_threads`."""
        torch.set_num_threads(self._previous_torch)
        if self._blas_limits is not None:
            self._blas_limits.restore_original_limits()
            self._blas_limits = None

    def __enter__(self) -> ThreadLimits:
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

    def __repr__(self) -> str:
        return f"ThreadLimits(threads={self.threads})"


def set_threads(threads: int | None = None) -> ThreadLimits:
    """Use ``threads`` threads in torch (intra-op) and in every BLAS / OpenMP pool.

    NumPy and SciPy are imported first so that their BLAS libraries are loaded and limited
    too (a library loaded later keeps its own default). Call it once at the start of a
    script, or use it as a context manager to restore the previous counts afterwards::

        set_threads(1)                  # from now on
        with set_threads(1):            # only inside the block (benchmarks, tests)
            ...

    Args:
        threads: a positive integer; ``None`` takes :func:`default_threads`.

    Returns:
        A :class:`ThreadLimits` whose ``restore()`` (or the end of the ``with`` block) puts
        the previous counts back.

    Raises:
        ValueError: ``threads`` is not a positive integer.
    """
    if threads is None:
        threads = default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    import numpy  # noqa: F401  (load the BLAS libraries so that the limit reaches them)

    try:
        import scipy.linalg  # noqa: F401
    except ImportError:  # pragma: no cover - scipy is a dependency
        pass
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    blas = threadpool_limits(limits=threads)
    torch.set_num_threads(threads)
    return ThreadLimits(threads, previous, blas)
