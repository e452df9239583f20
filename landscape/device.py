"""Where and on how many threads the work runs.

* :func:`resolve_device`: CUDA when present, CPU otherwise, ``--device`` to override.
* :func:`set_threads`: one thread count for torch's intra-op pool **and** the BLAS / OpenMP
  pools that NumPy and SciPy use (``eigh``, dense products), through ``threadpoolctl``.
  Torch's ``set_num_threads`` does not reach SciPy's OpenBLAS: on a loaded 2-core machine the
  dense head I^ε (a 391 × 391 generalized eigenproblem) took 2.4–10 s with OpenBLAS's
  default threads and 0.54 s with one. Every ``landscape`` command takes ``--threads N``
  (default :func:`default_threads`: the cores this process may actually use, see
  :func:`available_cores`).
* :func:`keep_freed_memory`: glibc's allocator keeps the memory a training step frees for
  the next step instead of returning it to the kernel (see its docstring for why).
"""

from __future__ import annotations

import ctypes
import math
import os
from pathlib import Path

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


def _cgroup_limits(proc_cgroup, root, controller: str, read_v2, read_v1) -> list:
    """What ``read_v2`` (cgroup v2) or ``read_v1`` (v1, ``controller``'s hierarchy) finds in
    the folder of this process's cgroup and of each of its ancestors (``None`` left out)."""
    root = Path(root)
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return []
    limits = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":  # cgroup v2: "0::/path"
            base, read = root, read_v2
        elif controller in controllers.split(","):  # cgroup v1: "N:cpu,cpuacct:/path"
            base, read = root / controllers, read_v1
        else:
            continue
        parts = [p for p in path.strip().split("/") if p]
        for depth in range(len(parts), -1, -1):
            limit = read(base.joinpath(*parts[:depth]))
            if limit is not None:
                limits.append(limit)
    return limits


def cgroup_cpu_limit(
    proc_cgroup: str | os.PathLike = "/proc/self/cgroup",
    root: str | os.PathLike = "/sys/fs/cgroup",
) -> float | None:
    """The CPU bandwidth this process's cgroups allow, in cores; ``None`` when unlimited.

    A container started with ``--cpus 2`` on a 64-core host sees 64 CPUs in its affinity but
    may only use ``quota / period = 2`` cores' worth of time per period: 16 threads there
    spend most of their time throttled. Reads cgroup v2 (``cpu.max``: ``"<quota> <period>"``
    or ``"max <period>"``) and v1 (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, quota -1:
    unlimited) for the process's cgroup and each of its ancestors (the smallest limit wins).
    Files that are missing or unreadable count as unlimited.
    """
    limits = _cgroup_limits(proc_cgroup, root, "cpu", _cpu_max, _cfs_quota)
    return min(limits) if limits else None


def available_memory(
    meminfo: str | os.PathLike = "/proc/meminfo",
    proc_cgroup: str | os.PathLike = "/proc/self/cgroup",
    root: str | os.PathLike = "/sys/fs/cgroup",
) -> int | None:
    """Bytes of memory this process can still take: the kernel's ``MemAvailable``, at most
    what the cgroup memory limits leave (a container's ``--memory``: v2 ``memory.max -
    memory.current``, v1 ``memory.limit_in_bytes - memory.usage_in_bytes``, for the cgroup
    and each of its ancestors; the smallest wins). ``None`` when unknown (not Linux)."""
    found = _cgroup_limits(proc_cgroup, root, "memory", _memory_v2, _memory_v1)
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)  # kB
    except (OSError, ValueError, IndexError):
        pass
    return max(0, min(found)) if found else None


def _memory_left(folder: Path, limit_file: str, usage_file: str) -> int | None:
    """``limit - usage`` in ``folder``; ``None`` without a limit (v2 ``max``, v1 ~2**63)."""
    try:
        limit = int((folder / limit_file).read_text())
        usage = int((folder / usage_file).read_text())
    except (OSError, ValueError):  # missing, unreadable or "max"
        return None
    return None if limit >= 1 << 60 else limit - usage


def _memory_v2(folder: Path) -> int | None:
    return _memory_left(folder, "memory.max", "memory.current")


def _memory_v1(folder: Path) -> int | None:
    return _memory_left(folder, "memory.limit_in_bytes", "memory.usage_in_bytes")


def _cpu_max(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _cfs_quota(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def physical_cores(cpus, sys_cpu: str | os.PathLike = "/sys/devices/system/cpu") -> int | None:
    """How many distinct physical cores the logical CPUs ``cpus`` sit on (two hyperthreads of
    one core count once); ``None`` when the topology is not readable."""
    cores = set()
    for cpu in cpus:
        topology = Path(sys_cpu) / f"cpu{cpu}" / "topology"
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return None
        cores.add((package, core))
    return len(cores) or None


def available_cores() -> int:
    """Cores this process can actually use: its CPU affinity (``os.cpu_count()`` where
    unknown), at most the cgroup CPU quota rounded up (:func:`cgroup_cpu_limit`) and at most
    the physical cores under that affinity (:func:`physical_cores`; a dense product's
    threads gain nothing from a core's second hyperthread, and torch's own default counts
    physical cores too)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1
    cores = len(cpus)
    physical = physical_cores(cpus)
    if physical is not None:
        cores = min(cores, physical)
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, math.ceil(limit))
    return max(1, cores)


def default_threads() -> int:
    """The thread count used when none is chosen.

    ``$OMP_NUM_THREADS`` when it is set to a positive integer (``torchrun`` sets it to 1 per
    process, ``make test`` to 1), else the cores this process can actually use
    (:func:`available_cores`: affinity, cgroup CPU quota, physical cores), at most
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


#: glibc's ``mallopt`` parameters (``<malloc.h>``).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep freed memory for reuse instead of returning it to the kernel.

    A full-batch step of the Colored MNIST MLP allocates and frees, per training domain, eight
    ``[25,000, 390]`` float32 tensors (39 MB each: the layers' outputs, their ReLUs and their
    gradients). glibc serves every block above its mmap threshold (at most 32 MB) with a
    fresh ``mmap`` and gives it back with ``munmap`` when freed, so every step the kernel
    maps, zero-fills and page-faults about 600 MB anew (150,000 minor faults) and, with
    several threads, interrupts the other cores to flush their TLBs: cheap on some machines,
    a large share of the step on virtual machines. With ``M_MMAP_MAX = 0`` (what
    ``MALLOC_MMAP_MAX_=0`` does at start-up) every block comes from the heap, and with a
    trim threshold of 1 GiB the heap is not shrunk after each step, so the next step reuses
    the same pages. The price is memory: the heap settles above the peak of a step (torch's
    64-byte-aligned blocks leave gaps glibc cannot always reuse; 1.1 GB instead of 0.65 GB
    for the protocol's MLP, after about six steps) and is kept until the process exits.

    Process-wide and one-way (glibc has no getter to restore from); a no-op returning
    ``False`` where the C library is not glibc (macOS, Windows, musl).

    Returns:
        ``True`` when both settings took effect.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
