"""Draw the figures and tables from saved results (nothing is recomputed).

RUN is a folder written by `landscape train` (or OUT/run of `landscape reproduce`);
ANALYSIS is the folder of `landscape reproduce`'s analysis (default: RUN/../analysis).
Writes, as the results allow, each as a PNG (300 dpi) and a PDF sized for a two-column paper:
training curves, Table 2 beside the paper's (and table2.md), the Hessian alignment over
training, Var vs Hessian and the per-sample gradient clouds of the head, the inconsistency
score (its parts, its pairs, over training, the two-parameter example), the loss surfaces and
the per-domain spectral densities.

RUN may also be the --out folder of `landscape score` (score.json / score.npz: the parts
of the score and the pairwise matrix), `landscape surface` (surface.json / surface.npz) or
`landscape curvature` (curvature_summary.json: the per-domain spectra), detected by the
files present.
"""

from __future__ import annotations

import argparse

from landscape.cli._common import add_out_argument

HELP = "draw the figures and tables from saved results"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run",
        metavar="RUN",
        help="run folder of `landscape train`, or the --out folder of `landscape score`, "
        "`surface` or `curvature`",
    )
    parser.add_argument(
        "--analysis", default=None, help="analysis folder (default: RUN/../analysis)"
    )
    add_out_argument(parser, "figures")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from landscape.pipeline import draw_figures, draw_output_figures, output_kinds
    from landscape.runs import JobFolder, RunFolder

    if output_kinds(args.run):  # the --out of landscape score / surface / curvature
        for path in draw_output_figures(args.run, args.out):
            print(path)
        return 0
    run_folder = RunFolder(args.run)
    try:
        run_folder.read_config()
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{err}, nor an output of landscape score / surface / curvature (no score.json, "
            "surface.json or curvature_summary.json)"
        ) from None
    if args.analysis:
        analysis = Path(args.analysis)
    else:  # RUN is the run of a `landscape reproduce` job: its analysis sits beside it
        analysis = JobFolder(run_folder.root.parent).analysis.root
    for path in draw_figures(run_folder.root, analysis, args.out):
        print(path)
    return 0
