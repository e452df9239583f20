"""Draw the figures and tables from saved results (nothing is recomputed).

RUN is a folder written by `landscape train` (or OUT/run of `landscape reproduce`);
ANALYSIS is the folder of `landscape reproduce`'s analysis (default: RUN/../analysis).
Writes training curves, the Table 2 comparison with the paper, the Hessian alignment over
training, the inconsistency-score figures and the loss surfaces that the results allow.
"""

from __future__ import annotations

import argparse

from landscape.cli._common import add_out_argument

HELP = "draw the figures and tables from saved results"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="run folder of `landscape train`")
    parser.add_argument(
        "--analysis", default=None, help="analysis folder (default: RUN/../analysis)"
    )
    add_out_argument(parser, "figures")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from landscape.pipeline import draw_figures

    run_dir = Path(args.run)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.json)")
    analysis = Path(args.analysis) if args.analysis else run_dir.parent / "analysis"
    for path in draw_figures(run_dir, analysis, args.out):
        print(path)
    return 0
