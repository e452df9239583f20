"""``history.csv``: one row per step of a run, written atomically, read back as floats.

Row ``t`` (``t = 0 .. steps-1``) is measured at the weights before update ``t``; the last
row, ``t = steps``, evaluates the final weights (see :mod:`landscape.training.objective` for
the columns).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

from landscape.io import atomic_write


def write_history(path: str | os.PathLike, rows: Sequence[dict[str, float]]) -> None:
    """Write history rows to CSV atomically (``step`` as an integer, floats at full precision)."""
    buffer = io.StringIO()
    if rows:
        columns = list(rows[0])
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow(
                [int(r[c]) if c == "step" else repr(float(r.get(c, math.nan))) for c in columns]
            )
    text = buffer.getvalue()
    atomic_write(path, lambda f: f.write(text), binary=False)


def read_history(path: str | os.PathLike) -> list[dict[str, float]]:
    """Read a ``history.csv`` back as a list of ``{column: float}`` rows."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
