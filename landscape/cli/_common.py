"""Arguments shared by several sub-commands (argparse only: no torch import here)."""

from __future__ import annotations

import argparse

#: the curvature matrices (``landscape.inconsistency.CURVATURES``)
CURVATURES = ["hessian", "ggn", "ef"]
#: the remedies of a singular or indefinite ``H_A`` (``landscape.inconsistency.REMEDIES``,
#: less ``None``)
REMEDIES = ["damping", "top-k"]
#: the top-k subspace size of the commands (the README's)
TOP_K = 20


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def epsilon_value(text: str) -> float:
    """argparse type of ``--epsilon``: a finite number > 0 (checked before loading anything)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"epsilon must be a number > 0, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(
            f"epsilon must be > 0 and finite, got {value:g}; e.g. --epsilon 1e-3"
        )
    return value


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="threads of torch and of the BLAS / OpenMP pools (NumPy, SciPy); default: "
        "$OMP_NUM_THREADS if set, else the cores available to this process, at most 16",
    )


def add_jobs_argument(parser, default: str) -> None:
    """``--jobs N``: (algorithm, restart) runs trained at once (``default`` says the default)."""
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=None,
        metavar="N",
        help="runs trained at once, each in its own process with --threads / N threads "
        f"(CPU only; default: {default})",
    )


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        help="torch device: auto (CUDA when present, else CPU), cpu, cuda, cuda:N",
    )


def add_out_argument(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--out", default=default, help=f"output directory (default: {default})")


#: ``--loss`` values (``landscape.inputs.LOSSES``, spelled out: no torch import to parse;
#: tests/cli/test_common.py keeps them equal); ``ce`` is accepted for cross_entropy
LOSSES = ["cross_entropy", "bce", "mse"]
#: ``--split`` values (``landscape.inputs.SPLITS``)
SPLITS = ["in", "out", "all"]

#: help of the CHECKPOINT positional of every analysis
CHECKPOINT_HELP = (
    "the weights to analyse, one of three formats: a landscape checkpoint (safetensors "
    "written by landscape train: model, domains and loss come from it); plain weights, a "
    "state dict in safetensors or PyTorch .pt / .pth / .bin (read with weights_only; give "
    "--model and --data); or a DomainBed model.pkl (its network is rebuilt and its "
    "environments read from --data-dir; --split chooses DomainBed's in / out part)"
)


def loss_choice(text: str) -> str:
    """argparse type of ``--loss``: cross_entropy (or ce), bce or mse."""
    value = text.strip().lower().replace("-", "_")
    if value == "ce":
        value = "cross_entropy"
    if value not in LOSSES:
        raise argparse.ArgumentTypeError(
            f"unknown loss {text!r}; use {', '.join(LOSSES[:-1])} or {LOSSES[-1]}"
        )
    return value


def spec_syntax(what: str):
    """argparse type of ``--model`` / ``--data``: a SPEC's syntax, checked while parsing
    (the file is imported later, after the weights file is found)."""

    def check(text: str) -> str:
        from landscape.specs import parse_spec

        try:
            parse_spec(text, what)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err).removeprefix(f"{what} ")) from None
        return text

    check.__name__ = "SPEC"
    return check


def add_inputs_arguments(parser, batch_size_help: str = "") -> None:
    """What to analyse besides the weights: ``--model``, ``--data``, ``--loss``,
    ``--batch-size``, ``--split`` (see ``landscape.inputs.load_for_analysis``)."""
    parser.add_argument(
        "--model",
        type=spec_syntax("--model"),
        default=None,
        metavar="SPEC",
        help="the network plain weights belong to: path/to/file.py:callable or "
        "package.module:callable, called with no arguments, returning an nn.Module (your "
        "own code, imported and run because you name it; nothing is run from the weights "
        "file). Needed for a state dict; with a landscape checkpoint it replaces the model "
        "rebuilt from the file",
    )
    parser.add_argument(
        "--data",
        type=spec_syntax("--data"),
        default=None,
        metavar="SPEC",
        help="the domains to analyse: path/to/file.py:callable or package.module:callable, "
        "called with no arguments, returning {domain name: data} with data a list of "
        "(X, y) batches or an unshuffled DataLoader. Needed for a state dict; default: "
        "rebuilt from the checkpoint (its data spec, or DomainBed's environments)",
    )
    parser.add_argument(
        "--loss",
        type=loss_choice,
        default=None,
        metavar="|".join(LOSSES),
        help="the loss, mean-reduced: cross_entropy (integer labels [N]), bce (one logit, "
        "0/1 targets [N, 1]) or mse. Default: the checkpoint's (DomainBed: cross_entropy); "
        "for a state dict, cross_entropy when the targets are integer labels [N], else "
        "required",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        metavar="N",
        help="split each domain into batches of N samples: every analysis accumulates over "
        "the batches, so memory is bounded by one batch and the results do not depend on N"
        f"{batch_size_help}; default: the batches as built (one per domain after "
        "--subsample)",
    )
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default=None,
        help="DomainBed checkpoints: the part of each environment to analyse, in (the "
        "samples it trained on; default), out (its held-out samples, holdout_fraction and "
        "trial_seed of the run) or all",
    )


def add_analysis_arguments(parser: argparse.ArgumentParser, out: str) -> None:
    """The tail every checkpoint analysis shares: --data-dir, --quiet, --device, --out."""
    parser.add_argument(
        "--data-dir",
        default=None,
        help="data folder: the MNIST cache (Colored MNIST, DomainBed's RotatedMNIST and "
        "ColoredMNIST; default $LANDSCAPE_DATA or ~/.cache/landscape), or for a DomainBed "
        "image data set the folder holding it in DomainBed's layout (e.g. DIR/PACS/...)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_device_argument(parser)
    add_out_argument(parser, out)


def add_params_argument(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    parser.add_argument(
        "--params",
        nargs="+",
        default=None if default is None else [default],
        help="parameters by name or prefix, e.g. classifier (Fishr's head); default: "
        + ("all" if default is None else default),
    )


def add_domains_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--domains",
        nargs="+",
        default=None,
        help="domains to analyse (default: the training domains of the checkpoint)",
    )


def add_subsample_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--subsample",
        type=int,
        default=None,
        metavar="N",
        help="use the first N samples of each domain (deterministic); default: all",
    )


def add_curvature_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """``--curvature``: the values of ``landscape.inconsistency.CURVATURES`` (spelled out: no
    torch import to parse; tests/cli/test_common.py keeps them equal)."""
    parser.add_argument("--curvature", choices=CURVATURES, default="hessian", help=help)


def add_remedy_arguments(parser, prefix: str = "", default: str | None = None) -> None:
    """``--remedy``, ``--damping``, ``--k`` of the inconsistency score (``prefix`` starts each
    help, e.g. ``"inconsistency: "`` where other directions share the command). With a
    ``default`` remedy, ``--remedy none`` selects the strict score and ``--k`` defaults to
    None (the command resolves it: :func:`default_k`)."""
    strict = "stop and report (none)"
    parser.add_argument(
        "--remedy",
        choices=REMEDIES + ["none"] if default else REMEDIES,
        default=default,
        help=f"{prefix}when H_A is not positive definite: damping (relative to "
        "lambda_max(H_A)) or top-k (restrict to its top-k eigenspace)"
        + (f"; none: {strict[:-7]}; default {default}" if default else f"; default: {strict}"),
    )
    parser.add_argument(
        "--damping",
        type=float,
        default=1e-3,
        help=f"{prefix}relative damping for --remedy damping (default 1e-3)",
    )
    k_help = f"min({TOP_K}, D - 1) for D parameters" if default else str(TOP_K)
    parser.add_argument(
        "--k",
        type=positive_int,
        default=None if default else TOP_K,
        help=f"{prefix}subspace size for --remedy top-k (default {k_help})",
    )


def default_k(dim: int) -> int:
    """The ``--k`` of a command with a default remedy: ``min(TOP_K, dim - 1)`` (at least 1)."""
    return max(1, min(TOP_K, dim - 1))


def load_checkpoint(args: argparse.Namespace, **options):
    """``landscape.inputs.load_for_analysis`` of ``args.checkpoint`` with the options every
    analysis shares (``--model``, ``--data``, ``--loss``, ``--batch-size``, ``--split``,
    ``--device``, ``--data-dir``, ``--domains``) and ``options``. Prints one line when the
    loss was inferred from the targets.

    Returns:
        ``(model, meta, domains, loss_func)``.
    """
    from landscape.inputs import load_for_analysis

    loaded = load_for_analysis(
        args.checkpoint,
        model=args.model,
        data=args.data,
        loss=args.loss,
        device=args.device,
        data_dir=args.data_dir,
        domains=args.domains,
        batch_size=args.batch_size,
        split=args.split,
        **options,
    )
    if loaded.metadata.get("loss_inferred"):
        print("loss: cross_entropy (the targets are integer labels); --loss to choose another")
    return loaded


def model_device(model) -> str:
    """Where the analysis ran: the device of the model's parameters (``"cuda:0"``, ``"cpu"``),
    recorded in each command's summary."""
    param = next(iter(model.parameters()), None)
    return "cpu" if param is None else str(param.device)


def params_from_args(values: list[str] | None):
    """``--params`` as ``select_params`` takes it: None, one prefix, or a list of names."""
    if values is None:
        return None
    return values[0] if len(values) == 1 else list(values)
