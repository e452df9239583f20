"""The one timer of the benchmarks: median wall time of a call after a warm-up."""

from __future__ import annotations

import statistics
import time


def median_time(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn()``, after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
