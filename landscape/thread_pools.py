"""How the two thread pools of a training step wait, set before torch and NumPy load.

On a machine where :mod:`landscape.gemm` sends the step's matrix products to NumPy's OpenBLAS
(torch's MKL on an AMD CPU), two pools share the cores in turn: torch's OpenMP threads for
the element-wise work and OpenBLAS's threads for the products. Each pool's idle threads spin
for a while after their work (libgomp by default, OpenBLAS for ``2^28`` cycles, about 0.1 s),
taking the cores from the other pool's threads. Measured on a 2-core AMD EPYC, a Fishr step of
the Colored MNIST protocol (``benchmarks/bench_gemm.py``, whole processes in turn): torch's
GEMM 0.64-0.68 s; NumPy's GEMM with spinning pools 0.76-0.78 s; with both pools waiting
passively 0.55-0.57 s.

:func:`prepare` (run by ``import landscape``, which imports neither torch nor NumPy) sets
``OMP_WAIT_POLICY=PASSIVE`` (unless torch is loaded) and ``OPENBLAS_THREAD_TIMEOUT=4``
(unless NumPy is) when that backend is expected: each is read once, when its library
loads. A value the user set is kept, and ``LANDSCAPE_GEMM=torch`` (one pool) leaves the
environment alone.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

#: The variables :func:`prepare` sets, their values, and the library that reads them when it
#: loads (torch's OpenMP runtime, NumPy's OpenBLAS).
PASSIVE_WAITING = {
    "OMP_WAIT_POLICY": ("PASSIVE", "torch"),
    "OPENBLAS_THREAD_TIMEOUT": ("4", "numpy"),
}


def cpu_vendor(cpuinfo: str | None = None) -> str:
    """The CPU vendor id (``"AuthenticAMD"``, ``"GenuineIntel"``) from ``/proc/cpuinfo``
    (or ``cpuinfo``); ``""`` where there is none (not Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return ""
    match = re.search(r"^vendor_id\s*:\s*(\S+)", cpuinfo, flags=re.MULTILINE)
    return match.group(1) if match else ""


def expects_numpy_gemm(environ=os.environ, vendor: str | None = None) -> bool:
    """Whether the training step will most likely use NumPy's BLAS: ``$LANDSCAPE_GEMM`` says
    ``numpy``, or it is unset and the CPU is AMD's (where torch's x86 wheels carry MKL)."""
    choice = environ.get("LANDSCAPE_GEMM", "").strip()
    if choice:
        return choice == "numpy"
    return (cpu_vendor() if vendor is None else vendor) == "AuthenticAMD"


def prepare(environ=os.environ, modules=sys.modules, vendor: str | None = None) -> dict:
    """Set :data:`PASSIVE_WAITING` in ``environ`` when :func:`expects_numpy_gemm`: each
    variable unless it is already set or its library already loaded; return what was set."""
    if not expects_numpy_gemm(environ, vendor):
        return {}
    added = {
        name: value
        for name, (value, library) in PASSIVE_WAITING.items()
        if name not in environ and library not in modules
    }
    environ.update(added)
    return added
