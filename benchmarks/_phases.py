"""Where the time of a training step goes: exclusive phase timers and minor page faults.

A :class:`Phases` object adds up, per phase name, the **exclusive** wall time spent inside
``with phases("name"):`` blocks (time in a nested block counts for the inner phase only), so
the phases of one step add up to at most the step's time; the rest is ``other``.
:func:`instrument` wraps functions (``module.attr``) so that every call runs inside a phase of
whichever :class:`Phases` is active (:data:`ACTIVE`), and is a no-op when none is.
"""

from __future__ import annotations

import contextlib
import functools
import resource
import time
from collections.abc import Callable, Iterator

#: The phases of a step, in the order the tables print them.
PHASES = ("forward", "penalty", "backward", "optimizer", "evaluation", "logging", "io")


def minor_faults() -> int:
    """Minor page faults of this process so far (fresh memory touched for the first time)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class Phases:
    """Exclusive wall time per phase, step after step.

    ``begin_step()`` / ``end_step()`` delimit a step; ``steps`` holds one
    ``{phase: seconds, "step": seconds, "faults": count}`` dict per finished step.
    """

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []
        self._current: dict[str, float] = {}
        self._stack: list[list[float]] = []  # [start, time spent in nested phases]
        self._start = 0.0
        self._faults = 0

    def begin_step(self, start: float | None = None) -> None:
        self._current = {}
        self._start = time.perf_counter() if start is None else start
        self._faults = minor_faults()

    def end_step(self, end: float | None = None) -> None:
        end = time.perf_counter() if end is None else end
        row = dict(self._current)
        row["step"] = end - self._start
        row["faults"] = float(minor_faults() - self._faults)
        self.steps.append(row)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        frame = [time.perf_counter(), 0.0]
        self._stack.append(frame)
        try:
            yield
        finally:
            self._stack.pop()
            elapsed = time.perf_counter() - frame[0]
            self._current[name] = self._current.get(name, 0.0) + elapsed - frame[1]
            if self._stack:
                self._stack[-1][1] += elapsed


#: The :class:`Phases` that instrumented functions report to (``None``: they run untimed).
ACTIVE: Phases | None = None


def activate(phases: Phases | None) -> None:
    """Make ``phases`` the one instrumented functions report to (``None``: none)."""
    global ACTIVE
    ACTIVE = phases


def instrument(owner, attr: str, phase: str | Callable[[], str]) -> Callable[[], None]:
    """Wrap ``owner.attr`` so that each call runs inside ``phase`` of :data:`ACTIVE`.

    ``phase`` is a name or a function returning one at call time (e.g. ``"forward"`` or
    ``"evaluation"`` depending on ``torch.is_grad_enabled()``). Returns the function that
    puts the original back; a missing attribute is skipped (returns a no-op).
    """
    original = getattr(owner, attr, None)
    if original is None:
        return lambda: None

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        phases = ACTIVE
        if phases is None:
            return original(*args, **kwargs)
        with phases(phase() if callable(phase) else phase):
            return original(*args, **kwargs)

    setattr(owner, attr, wrapper)
    return lambda: setattr(owner, attr, original)


def summarise(steps: list[dict[str, float]]) -> dict[str, float]:
    """Mean of every phase over ``steps`` (``median`` of the step time too, ``other`` the
    unattributed rest)."""
    n = max(1, len(steps))
    out = {name: sum(s.get(name, 0.0) for s in steps) / n for name in (*PHASES, "step", "faults")}
    ordered = sorted(s["step"] for s in steps) or [0.0]
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    out["median"] = median
    out["other"] = max(0.0, out["step"] - sum(out[p] for p in PHASES))
    return out
