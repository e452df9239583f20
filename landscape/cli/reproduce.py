"""Train on Colored MNIST, analyse the checkpoints, draw the figures: the default job.

Steps (each resumes when interrupted; see landscape.pipeline):
  1. train ERM and Fishr with the Colored MNIST protocol (501 full-batch Adam steps,
     penalty annealed at step 190) into OUT/run, with checkpoints along the way;
  2. analyse into OUT/analysis: the inconsistency score I^eps of the head (dense) and of
     the whole network (matrix-free), each with its empirical check on the true losses;
     the Hessian alignment of the head over training; per-domain loss surfaces; the
     head's I^eps at every checkpoint, its variance vs Hessian diagonal and per-sample
     gradients; SLQ spectra of the head and the network;
  3. draw every figure (PNG + PDF) into OUT/figures and print the results.

The default is the protocol's data (25,000 images per training domain) with one restart:
7 minutes on 2 Intel Xeon cores, 13 on 2 AMD EPYC cores (make demo from a fresh clone).
--full runs 3 restarts.
--subsample N is faster but not representative: with 5,000 images per domain the MLP
memorises the noisy labels (ERM 98.6% train accuracy) and Fishr's gain disappears (48.7%
on the -90% domain, measured here).
"""

from __future__ import annotations

import argparse

from landscape.cli._common import add_device_argument, add_jobs_argument, add_out_argument

HELP = "the default end-to-end job: train, analyse, draw (Colored MNIST, ERM vs Fishr)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--algorithm",
        nargs="+",
        default=["erm", "fishr"],
        metavar="NAME",
        help="algorithms to train and compare (default: erm fishr)",
    )
    parser.add_argument("--restarts", type=int, default=None, help="default 1 (3 with --full)")
    parser.add_argument(
        "--subsample",
        type=int,
        default=None,
        help="keep the first N images of each domain (default: all; not representative "
        "below ~25,000, see above)",
    )
    parser.add_argument("--full", action="store_true", help="3 restarts (default 1)")
    parser.add_argument("--steps", type=int, default=501, help="Adam steps (default 501)")
    parser.add_argument(
        "--epsilon", type=float, default=0.01, help="epsilon of I^eps (default 0.01)"
    )
    parser.add_argument(
        "--analysis-subsample",
        type=int,
        default=2000,
        help="samples per domain for the whole-network score and the surfaces (default 2000)",
    )
    parser.add_argument("--grid", type=int, default=21, help="surface points per axis (21)")
    parser.add_argument("--data-dir", default=None, help="MNIST cache folder")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_jobs_argument(parser, "one per run, at most --threads and one per 1.75 GB of free memory")
    add_device_argument(parser)
    add_out_argument(parser, "runs/reproduce")


def run(args: argparse.Namespace) -> int:
    from landscape.device import resolve_device
    from landscape.pipeline import (
        analyse_run,
        default_jobs,
        draw_figures,
        reproduce_config,
        summary,
    )
    from landscape.runs import JobFolder
    from landscape.training import train

    job = JobFolder(args.out)
    run_dir, analysis_dir = job.run.root, job.analysis.root
    progress = not args.no_progress
    config = reproduce_config(
        args.algorithm,
        restarts=args.restarts or (3 if args.full else 1),
        steps=args.steps,
        subsample=args.subsample,
        device=args.device,
    )
    print(f"[1/3] training {', '.join(config.algorithms)} into {run_dir}")
    results = train(config, run_dir, progress=progress, data_dir=args.data_dir,
                    jobs=default_jobs(config) if args.jobs is None else args.jobs)  # fmt: skip
    print(results.markdown())
    print(f"[2/3] analysing checkpoints into {analysis_dir}")
    analyse_run(
        run_dir,
        analysis_dir,
        epsilon=args.epsilon,
        subsample=args.analysis_subsample,
        grid=args.grid,
        device=str(resolve_device(args.device)),
        data_dir=args.data_dir,
        progress=progress,
    )
    print(summary(analysis_dir))
    paths = draw_figures(run_dir, analysis_dir, job.figures)
    print(f"[3/3] {len(paths)} figures and tables in {job.figures}")
    return 0
