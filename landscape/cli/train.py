"""Train ERM, IRM, V-REx and Fishr: Colored MNIST (the Fishr paper's protocol, the default) or
DomainBed's benchmarks (``--dataset NAME``, DomainBed's minibatch protocol).

Every option defaults to the protocol of the Colored MNIST script of the Fishr paper (IRM's
hyperparameters for every method: 501 full-batch Adam steps, penalty weight 91257.19 from
step 190 on, the whole loss divided by it). The output folder holds config.json,
results.{json,md} (mean ± std over restarts, in percent) and, per algorithm and restart,
history.csv, the checkpoints and a resumable state: running the same command again resumes
an interrupted run (finished restarts are skipped).

With --dataset (RotatedMNIST, ColoredMNIST, PACS, VLCS, OfficeHome, TerraIncognita,
DomainNet, Debug28, Debug224), one algorithm trains with DomainBed's protocol (its
scripts/train.py options, with dashes): minibatches of every training environment's in split,
an evaluation of every environment's in and out splits every --checkpoint-freq steps, one
record per evaluation in results.jsonl (DomainBed's keys: its collect_results reads the
folder), a checkpoint per evaluation, model.safetensors and done at the end; rerunning the
same command resumes.

Examples:
  landscape train --algorithm erm fishr --restarts 10 --out runs/cmnist
  landscape train --algorithm all --subsample 2000 --steps 101 --anneal-step 50
  landscape train --config runs/cmnist/config.json --restarts 20   # extend a run
  landscape train --dataset RotatedMNIST --algorithm Fishr --test-envs 0 --out runs/rmnist
  landscape train --dataset PACS --algorithm ERM --data-dir /data --hparams-seed 3
"""

from __future__ import annotations

import argparse

from landscape.cli._common import add_device_argument, add_jobs_argument, add_out_argument
from landscape.cli._domainbed_train import add_domainbed_arguments, check_protocol_options

HELP = (
    "train ERM / IRM / V-REx / Fishr (Colored MNIST protocol, or DomainBed's with --dataset) "
    "with checkpoints and resume"
)

# argparse destination -> TrainConfig field
_FIELDS = {
    "algorithm": "algorithms",
    "restarts": "restarts",
    "steps": "steps",
    "anneal_step": "anneal_step",
    "penalty_weight": "penalty_weight",
    "lr": "lr",
    "l2": "l2",
    "schedule": "schedule",
    "distance": "distance",
    "ema": "ema",
    "subsample": "subsample",
    "label_noise": "label_noise",
    "data_seed": "data_seed",
    "resample_data": "resample_data",
    "stream": "stream",
    "seed": "seed",
    "hidden_dims": "hidden_dims",
    "checkpoint_steps": "checkpoint_steps",
    "state_every": "state_every",
    "log_all": "log_all",
    "device": "device",
    "dtype": "dtype",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # the defaults are written out (importing torch here would slow down every command);
    # tests/training/test_train.py checks them against TrainConfig
    _add_protocol_arguments(parser.add_argument_group("protocol"))
    _add_data_arguments(parser.add_argument_group("data"))
    _add_model_arguments(parser.add_argument_group("model and device"))
    _add_output_arguments(parser.add_argument_group("output, checkpoints and resume"))
    add_domainbed_arguments(parser.add_argument_group("DomainBed protocol (--dataset NAME)"))


def _add_protocol_arguments(group) -> None:
    group.add_argument(
        "--algorithm",
        nargs="+",
        metavar="NAME",
        help="algorithms to train: erm irm vrex fishr fishr_notcentered fishr_offdiagonal "
        "fishr_all, or all (default: erm irm vrex fishr); with --dataset one of ERM IRM VREx "
        "Fishr (default ERM)",
    )
    group.add_argument(
        "--restarts",
        type=int,
        help="restarts per algorithm; restart k is the script's restart k (--stream script) "
        "or seeded seed+k (--stream per-restart) (default 3)",
    )
    group.add_argument(
        "--steps",
        type=int,
        help="full-batch Adam steps (default 501); with --dataset minibatch steps (default: "
        "the data set's, 5001)",
    )
    group.add_argument(
        "--anneal-step",
        type=int,
        help="first step with the full penalty weight; >= --steps never switches (default 190)",
    )
    group.add_argument(
        "--penalty-weight",
        type=float,
        help="penalty weight after the anneal step (default 91257.18613115903)",
    )
    group.add_argument(
        "--lr", type=float, help="Adam learning rate (default 0.0004898536566546834)"
    )
    group.add_argument(
        "--l2",
        type=float,
        help="weight of the squared L2 norm of all parameters, biases included "
        "(default 0.00110794568)",
    )
    group.add_argument(
        "--schedule",
        choices=["script", "domainbed"],
        help="script: weight 1 before the anneal step, loss divided by the weight once it "
        "exceeds 1, no Adam reset; domainbed: weight 0 before, Adam re-created at the switch "
        "(default script)",
    )
    group.add_argument(
        "--distance",
        choices=["sum", "mean"],
        help="Fishr distance between gradient variances: sum (the Colored MNIST script) or "
        "mean (DomainBed) of squared differences (default sum)",
    )
    group.add_argument(
        "--ema",
        type=float,
        help="moving average of Fishr's variances, beta in (0, 1); DomainBed uses 0.95 "
        "(default: none)",
    )


def _add_data_arguments(group) -> None:
    group.add_argument(
        "--subsample",
        type=int,
        help="keep this many samples per Colored MNIST domain (default: all 25,000 / 10,000); "
        "with --dataset the first this many of each environment's in and out splits",
    )
    group.add_argument("--label-noise", type=float, help="label flip probability (default 0.25)")
    group.add_argument(
        "--stream",
        choices=["script", "per-restart"],
        help="random stream of Colored MNIST: script = the official script's (NumPy and torch "
        "seeded once with --seed; restart k continues after restarts 0..k-1, whose draws are "
        "replayed: same shuffle, flips and initial weights as the script's restart k); "
        "per-restart = re-seed every restart (data --data-seed+k, model --seed+k) "
        "(default script)",
    )
    group.add_argument(
        "--data-seed",
        type=int,
        help="--stream per-restart: seed of the data shuffle and noise draws; restart k uses "
        "data-seed+k (default 0)",
    )
    group.add_argument(
        "--same-data",
        dest="resample_data",
        action="store_const",
        const=False,
        help="--stream per-restart: share one data draw across restarts (default: new data "
        "per restart, as the Colored MNIST script)",
    )
    group.add_argument(
        "--data-dir",
        default=None,
        help="MNIST cache folder (default: $LANDSCAPE_DATA or ~/.cache/landscape); with an "
        "image --dataset the folder holding e.g. PACS/<env>/<class>/<image>",
    )


def _add_model_arguments(group) -> None:
    group.add_argument(
        "--seed",
        type=int,
        help="the script's --seed (--stream script: data and initial weights); with "
        "--stream per-restart the base seed of the model initialisations (default 0); with "
        "--dataset DomainBed's --seed (MNIST shuffle, initial weights, minibatches)",
    )
    group.add_argument(
        "--hidden-dims",
        type=int,
        nargs="+",
        metavar="WIDTH",
        help="hidden layer widths of the MLP (default 390 390)",
    )
    group.add_argument(
        "--dtype", choices=["float32", "float64"], help="floating dtype (default float32)"
    )
    add_device_argument(group)
    group.set_defaults(device=None)


def _add_output_arguments(group) -> None:
    group.add_argument(
        "--checkpoint-steps",
        type=int,
        nargs="*",
        metavar="STEP",
        help="also save the weights after these many updates (0 = initialisation); the "
        "final weights are always saved",
    )
    group.add_argument(
        "--state-every",
        type=int,
        help="steps between two saves of the resumable state (default 50)",
    )
    group.add_argument(
        "--no-log-all",
        dest="log_all",
        action="store_const",
        const=False,
        help="compute only the selected penalty (default: log IRM, V-REx and Fishr every step)",
    )
    group.add_argument(
        "--config",
        default=None,
        metavar="JSON",
        help="start from this config file (e.g. an earlier run's config.json); other options "
        "override it",
    )
    add_out_argument(group, "runs/train")
    group.add_argument(
        "--no-resume",
        action="store_true",
        help="start every run over instead of resuming what --out holds",
    )
    group.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_jobs_argument(group, "1, one after the other")


def config_from_args(args: argparse.Namespace):
    """The :class:`~landscape.training.TrainConfig` described by parsed arguments."""
    from landscape.io import read_json
    from landscape.training import TrainConfig

    values = dict(read_json(args.config)) if args.config else {}
    for dest, key in _FIELDS.items():
        value = getattr(args, dest, None)
        if value is not None:
            values[key] = value
    return TrainConfig.from_dict(values)


def run(args: argparse.Namespace) -> int:
    check_protocol_options(args)
    if args.dataset is not None:
        from landscape.cli._domainbed_train import run as run_domainbed

        return run_domainbed(args)
    from landscape.training import train

    config = config_from_args(args)
    results = train(
        config,
        args.out,
        progress=not args.no_progress,
        resume=not args.no_resume,
        data_dir=args.data_dir,
        jobs=1 if args.jobs is None else args.jobs,
    )
    print(results.markdown(), end="")
    print(f"results written to {args.out}/results.md")
    return 0
