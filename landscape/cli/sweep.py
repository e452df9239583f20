"""Launch a DomainBed sweep: one `landscape train --dataset ...` per job, resumable.

The jobs are data sets × algorithms × test environments × trial seeds × hparams seeds, in
DomainBed's order (facebookresearch/DomainBed, domainbed/scripts/sweep.py). By default each
environment of a data set is in turn the single test environment; hparams seed 0 trains
with the default hyper-parameters and --hparams-draws N adds DomainBed's random draws
(hparams seeds 1 .. N-1, drawn by the training command). Each job's folder under --out is
the md5 of its arguments (as DomainBed's), its seed seed_hash(dataset, algorithm,
test_envs, hparams_seed, trial_seed).

Running the same command again skips the finished jobs (a `done` file) and re-launches the
incomplete ones, which resume from their last checkpoint. Each job's output goes to
out.txt / err.txt in its folder; a failed job does not stop the others.

Example:
  landscape sweep --dataset ColoredMNIST RotatedMNIST --algorithm ERM Fishr \\
      --trials 3 --out runs/domainbed --jobs 2
  landscape collect runs/domainbed
"""

from __future__ import annotations

import argparse
import shlex
import sys

from landscape.cli._common import positive_int

HELP = "launch a DomainBed sweep (data sets × algorithms × test envs × trials), resumable"


def env_index_or_all(text: str) -> int | str:
    """argparse type of ``--test-envs``: ``all`` or an integer >= 0."""
    if text == "all":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'all' or an index >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 'all' or an index >= 0, got {value}")
    return value


def _add_job_arguments(parser: argparse.ArgumentParser) -> None:
    from landscape.sweeps.jobs import ALGORITHMS, HOLDOUT_FRACTION

    parser.add_argument(
        "--dataset", nargs="+", required=True, metavar="NAME",
        help="DomainBed data sets: ColoredMNIST, RotatedMNIST, VLCS, PACS, OfficeHome, "
        "TerraIncognita, DomainNet, Debug28, Debug224",
    )  # fmt: skip
    parser.add_argument(
        "--algorithm", nargs="+", required=True, metavar="NAME",
        help=f"DomainBed algorithms: {', '.join(ALGORITHMS)} (any case)",
    )  # fmt: skip
    parser.add_argument(
        "--test-envs", nargs="+", type=env_index_or_all, default=["all"], metavar="I",
        help="environment indices, each the single test environment of its own jobs, or "
        "all (default: every environment in turn)",
    )  # fmt: skip
    parser.add_argument(
        "--trials", type=positive_int, default=3, metavar="N",
        help="trial seeds 0 .. N-1, each with its own in / out split (default: 3)",
    )  # fmt: skip
    parser.add_argument(
        "--hparams-draws", type=positive_int, default=1, metavar="N",
        help="hparams seeds 0 .. N-1: 0 is the default hyper-parameters, 1 .. N-1 "
        "DomainBed's random draws (default: 1, the defaults only; DomainBed's sweep uses 20)",
    )  # fmt: skip
    parser.add_argument(
        "--steps", type=positive_int, default=None, metavar="N",
        help="training steps of every job (default: the training command's, the data set's)",
    )  # fmt: skip
    parser.add_argument(
        "--checkpoint-freq", type=positive_int, default=None, metavar="N",
        help="steps between evaluations (default: the training command's, the data set's)",
    )  # fmt: skip
    parser.add_argument(
        "--data-dir", default=None, metavar="DIR",
        help="data folder passed to every job (default: the training command's)",
    )  # fmt: skip
    parser.add_argument(
        "--holdout-fraction", type=float, default=HOLDOUT_FRACTION, metavar="F",
        help=f"held-out share of each environment (default: {HOLDOUT_FRACTION}, DomainBed's)",
    )  # fmt: skip
    parser.add_argument(
        "--hparams", default=None, metavar="JSON",
        help="hyper-parameters overriding those of every job, a JSON object, e.g. "
        "'{\"lr\": 1e-4}'",
    )  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_job_arguments(parser)
    parser.add_argument("--out", required=True, help="the sweep folder (one folder per job)")
    parser.add_argument(
        "--jobs", type=positive_int, default=1, metavar="N",
        help="local launcher: jobs run at once, each with max(1, cores // N) threads "
        "(--threads sets the threads of each job instead) (default: 1)",
    )  # fmt: skip
    parser.add_argument(
        "--launcher", choices=["local", "submitit"], default="local",
        help="local processes (default), or Slurm through submitit (pip install submitit)",
    )  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run none")
    parser.add_argument(
        "--skip-confirmation", action="store_true",
        help="launch without asking (the command asks 'Are you sure?' otherwise)",
    )  # fmt: skip
    slurm = parser.add_argument_group("Slurm (--launcher submitit)")
    slurm.add_argument("--slurm-partition", default=None, metavar="NAME", help="Slurm partition")
    slurm.add_argument(
        "--slurm-time", type=positive_int, default=None, metavar="MINUTES",
        help="time limit of each job in minutes",
    )  # fmt: skip
    slurm.add_argument(
        "--slurm-cpus", type=positive_int, default=None, metavar="N", help="CPUs of each job"
    )
    slurm.add_argument("--slurm-gpus", type=int, default=None, metavar="N", help="GPUs of each job")
    slurm.add_argument(
        "--slurm-mem", type=positive_int, default=None, metavar="GB", help="memory of each job"
    )
    slurm.add_argument(
        "--slurm-parallel", type=positive_int, default=None, metavar="N",
        help="at most N jobs of the array at once",
    )  # fmt: skip


def _jobs(args: argparse.Namespace):
    from landscape.sweeps.jobs import make_jobs

    test_envs = None if "all" in args.test_envs else args.test_envs
    if "all" in args.test_envs and len(args.test_envs) > 1:
        raise ValueError("--test-envs takes 'all' or indices, not both")
    return make_jobs(
        args.dataset, args.algorithm, args.out,
        test_envs=test_envs, trials=args.trials, hparams_draws=args.hparams_draws,
        steps=args.steps, checkpoint_freq=args.checkpoint_freq, data_dir=args.data_dir,
        holdout_fraction=args.holdout_fraction, hparams=args.hparams,
    )  # fmt: skip


def _confirm(n: int) -> bool:
    try:
        answer = input(f"About to launch {n} jobs. Are you sure? (y/n) ")
    except EOFError:
        raise ValueError(
            "no answer to 'Are you sure?' (stdin is not interactive); pass --skip-confirmation"
        ) from None
    return answer.strip().lower().startswith("y")


def _launch_slurm(args: argparse.Namespace, todo) -> int:
    from pathlib import Path

    from landscape.sweeps.launch import submit_slurm

    slurm = {
        "slurm_partition": args.slurm_partition,
        "timeout_min": args.slurm_time,
        "cpus_per_task": args.slurm_cpus,
        "gpus_per_node": args.slurm_gpus,
        "mem_gb": args.slurm_mem,
        "slurm_array_parallelism": args.slurm_parallel,
    }
    ids = submit_slurm(todo, Path(args.out) / "slurm", slurm, args.threads or args.slurm_cpus)
    if ids:
        print(f"submitted {len(ids)} jobs to Slurm (ids {ids[0]} .. {ids[-1]})")
    print(f"run this command again to see their states; then `landscape collect {args.out}`")
    return 0


def run(args: argparse.Namespace) -> int:
    from landscape.sweeps.jobs import JobState, count_states
    from landscape.sweeps.launch import LocalLauncher, import_submitit, train_command

    if args.launcher == "submitit" and not args.dry_run:
        import_submitit()  # a one-line error before anything else when missing
    jobs = _jobs(args)
    counts = count_states(jobs)
    print(
        f"{len(jobs)} jobs: {counts[JobState.DONE]} done, {counts[JobState.INCOMPLETE]} "
        f"incomplete, {counts[JobState.NOT_LAUNCHED]} not launched"
    )
    todo = [job for job in jobs if job.state is not JobState.DONE]
    if args.dry_run:
        for job in jobs:
            print(f"{job.state.value}: {shlex.join(train_command(job))}")
        return 0
    if not todo:
        print(f"nothing to launch; `landscape collect {args.out}` tabulates the results")
        return 0
    if not args.skip_confirmation and not _confirm(len(todo)):
        print("nothing launched")
        return 0
    if args.launcher == "submitit":
        return _launch_slurm(args, todo)
    launcher = LocalLauncher(parallel=args.jobs, threads=args.threads)
    print(f"launching {len(todo)} jobs, {args.jobs} at a time, {launcher.threads} threads each")
    sys.stdout.flush()
    summary = launcher.launch(jobs)
    print(summary.line())
    if summary.failed:
        print("failed jobs run again (resuming) when this command runs again")
    print(f"`landscape collect {args.out}` tabulates the finished runs")
    return 1 if summary.failed else 0
