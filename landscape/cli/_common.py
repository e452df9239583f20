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


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        help="torch device: auto (CUDA when present, else CPU), cpu, cuda, cuda:N",
    )


def add_out_argument(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--out", default=default, help=f"output directory (default: {default})")


def add_analysis_arguments(parser: argparse.ArgumentParser, out: str) -> None:
    """The tail every checkpoint analysis shares: --data-dir, --quiet, --device, --out."""
    parser.add_argument("--data-dir", default=None, help="MNIST cache folder (Colored MNIST)")
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
    """``landscape.runs.load_for_analysis`` of ``args.checkpoint`` with the options every
    analysis shares (``--device``, ``--data-dir``, ``--domains``) and ``options``.

    Returns:
        ``(model, meta, domains, loss_func)``.
    """
    from landscape.runs import load_for_analysis

    return load_for_analysis(
        args.checkpoint,
        device=args.device,
        data_dir=args.data_dir,
        domains=args.domains,
        **options,
    )


def params_from_args(values: list[str] | None):
    """``--params`` as ``select_params`` takes it: None, one prefix, or a list of names."""
    if values is None:
        return None
    return values[0] if len(values) == 1 else list(values)
