"""Tabulate a sweep as DomainBed does: model selection, then mean ± standard error over trials.

Reads every run folder under DIR, recursively (a folder holding results.jsonl: ours from
`landscape sweep`, or DomainBed's own sweep output); runs without a `done` file are skipped
with a note. For each model selection method (training-domain validation: the step with the
best mean held-out accuracy of the training environments; test-domain validation, oracle:
the last step, hparams chosen on the test environment's held-out split) it prints one table
per data set (algorithms × test environments + Avg) and one over data sets (+ Avg). A cell
is the test environment's in-split accuracy (%), mean ± standard error over trial seeds
(DomainBed's: std with ddof 0 over sqrt(n)); X marks a missing cell; the Fishr paper's
number follows ours in parentheses where the paper gives one.

Writes DIR/results.md and DIR/results.tex (atomically) and prints the Markdown (or, with
--latex, the LaTeX).
"""

from __future__ import annotations

import argparse
import sys

HELP = "DomainBed's model-selection tables of a sweep folder (Markdown + LaTeX)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from landscape.sweeps.selection import SELECTIONS

    parser.add_argument("dir", metavar="DIR", help="the sweep folder (searched recursively)")
    parser.add_argument(
        "--latex", action="store_true", help="print the LaTeX tables instead of the Markdown"
    )
    parser.add_argument(
        "--selection",
        choices=SELECTIONS,
        default="all",
        help="model selection: training (training-domain validation), oracle (test-domain "
        "validation) or all (default)",
    )


def _note(text: str) -> None:
    print(f"landscape collect: note: {text}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from landscape.sweeps.tables import collect

    result = collect(args.dir, selection=args.selection)
    print(result.latex if args.latex else result.markdown, end="", flush=True)
    loaded = result.loaded
    if loaded.unfinished:
        names = ", ".join(str(p) for p in loaded.unfinished[:3])
        more = f" and {len(loaded.unfinished) - 3} more" if len(loaded.unfinished) > 3 else ""
        _note(f"skipped {_runs(len(loaded.unfinished))} without a done file: {names}{more}")
    for line in loaded.unreadable:
        _note(f"skipped an unreadable run: {line}")
    md, tex = result.paths
    _note(f"wrote {md} and {tex}")
    return 0


def _runs(n: int) -> str:
    return f"{n} unfinished run" + ("" if n == 1 else "s")
