"""``landscape train --dataset NAME``: DomainBed's minibatch protocol (argparse only here).

The options of ``scripts/train.py`` of DomainBed, spelled with dashes; the run folder holds
DomainBed's ``results.jsonl`` and ``done`` (so DomainBed's ``collect_results`` reads it),
our checkpoints and a resumable state (:mod:`landscape.training.minibatch`). Options that
belong to one protocol only are refused with the other, in one line.
"""

from __future__ import annotations

import argparse

from landscape.cli._common import positive_int

#: DomainBed's data sets we rebuild (``landscape.data.domainbed.DATASETS``, spelled out so that
#: parsing imports no torch; tests/cli/test_train_domainbed.py keeps them equal).
DATASETS = [
    "Debug28",
    "Debug224",
    "ColoredMNIST",
    "RotatedMNIST",
    "VLCS",
    "PACS",
    "OfficeHome",
    "TerraIncognita",
    "DomainNet",
]

#: ``dest`` of the options of each protocol alone (the others are shared: ``--algorithm``
#: (one name here), ``--steps``, ``--seed``, ``--subsample``, ``--data-dir``, ``--device``,
#: ``--out``, ``--no-resume``, ``--no-progress``, ``--threads``).
DOMAINBED_ONLY = (
    "test_envs",
    "hparams_seed",
    "trial_seed",
    "checkpoint_freq",
    "holdout_fraction",
    "hparams",
    "num_workers",
    "save_domainbed_pkl",
    "step_checkpoints",
)
COLORED_MNIST_ONLY = (
    "restarts",
    "anneal_step",
    "penalty_weight",
    "lr",
    "l2",
    "schedule",
    "distance",
    "ema",
    "label_noise",
    "stream",
    "data_seed",
    "resample_data",
    "hidden_dims",
    "dtype",
    "checkpoint_steps",
    "state_every",
    "log_all",
    "config",
    "jobs",
)


def add_domainbed_arguments(group) -> None:
    """DomainBed's options (their defaults are ``None`` so that their use can be told)."""
    group.add_argument(
        "--dataset",
        choices=DATASETS,
        default=None,
        help="train with DomainBed's minibatch protocol on this data set (one --algorithm: "
        "ERM, IRM, VREx or Fishr); default: the IRM Colored MNIST full-batch protocol",
    )
    group.add_argument(
        "--test-envs",
        type=int,
        nargs="+",
        metavar="I",
        help="indices of the test environments (default 0)",
    )
    group.add_argument(
        "--hparams-seed", type=int, help="0: default hparams, else a random draw (default 0)"
    )
    group.add_argument(
        "--trial-seed", type=int, help="seed of the in / out splits and random hparams (default 0)"
    )
    group.add_argument(
        "--checkpoint-freq",
        type=positive_int,
        help="steps between evaluations (default: the data set's, 100; 300 for the image "
        "data sets, 1000 for DomainNet)",
    )
    group.add_argument(
        "--holdout-fraction", type=float, help="held-out part of each environment (default 0.2)"
    )
    group.add_argument(
        "--hparams",
        metavar="JSON",
        help='hparams overriding the defaults or the draw, e.g. \'{"lr": 1e-4, "batch_size": 32}\'',
    )
    group.add_argument(
        "--num-workers",
        type=int,
        help="DataLoader worker processes (default 0 for MNIST, up to 8 for image folders)",
    )
    group.add_argument(
        "--save-domainbed-pkl",
        action="store_const",
        const=True,
        help="also write DomainBed's model.pkl (read by DomainBed and by landscape score)",
    )
    group.add_argument(
        "--no-step-checkpoints",
        dest="step_checkpoints",
        action="store_const",
        const=False,
        help="keep only the final weights (default: a checkpoint at every evaluation)",
    )


def _flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """``{dest: its first option string}`` of ``parser``."""
    return {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}


def check_protocol_options(args: argparse.Namespace) -> None:
    """One-line ``ValueError`` for an option of the other protocol than the one chosen."""
    flags = _flags(args._parser)
    if args.dataset is None:
        used = [d for d in DOMAINBED_ONLY if getattr(args, d, None) is not None]
        if used:
            raise ValueError(
                f"{flags[used[0]]} belongs to DomainBed's protocol; add --dataset NAME (e.g. "
                "--dataset RotatedMNIST), or drop it for the Colored MNIST protocol"
            )
        return
    used = [d for d in COLORED_MNIST_ONLY if getattr(args, d, None) is not None]
    if used:
        raise ValueError(
            f"{flags[used[0]]} belongs to the Colored MNIST protocol, not to --dataset "
            f"{args.dataset}; DomainBed's hyperparameters come from --hparams-seed and "
            "--hparams JSON"
        )
    if args.algorithm is not None and len(args.algorithm) != 1:
        raise ValueError(
            f"--dataset trains one algorithm per run, got --algorithm "
            f"{' '.join(args.algorithm)}; run once per algorithm (each into its own --out)"
        )


def config_from_args(args: argparse.Namespace):
    """The :class:`~landscape.training.minibatch.DomainBedConfig` of parsed arguments."""
    from landscape.training.minibatch import DomainBedConfig

    values = {"dataset": args.dataset, "device": args.device or "auto"}
    if args.algorithm is not None:
        values["algorithm"] = args.algorithm[0]
    shared = ("steps", "seed", "subsample", "data_dir")
    for dest in shared + DOMAINBED_ONLY:
        value = getattr(args, dest, None)
        if value is not None:
            values[dest] = value
    return DomainBedConfig(**values)


def summary(records: list[dict], test_envs: list[int]) -> str:
    """One line on the last record: its step and each test environment's accuracies."""
    if not records:
        return "no record"
    last = records[-1]
    parts = [f"step {last['step']}"]
    for i in test_envs:
        parts.append(
            f"env{i} (test) in {last[f'env{i}_in_acc']:.4f} out {last[f'env{i}_out_acc']:.4f}"
        )
    return ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    from landscape.training.minibatch import read_records, train_domainbed

    config = config_from_args(args)
    folder = train_domainbed(
        config, args.out, progress=not args.no_progress, resume=not args.no_resume
    )
    records = read_records(folder / "results.jsonl")
    print(f"{config.algorithm} on {config.dataset}: {summary(records, config.test_envs)}")
    print(f"results written to {folder}/results.jsonl")
    return 0
