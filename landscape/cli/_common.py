"""Arguments shared by several sub-commands (argparse only: no torch import here)."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
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


def params_from_args(values: list[str] | None):
    """``--params`` as ``select_params`` takes it: None, one prefix, or a list of names."""
    if values is None:
        return None
    return values[0] if len(values) == 1 else list(values)


def load_for_analysis(
    checkpoint: str,
    *,
    device: str = "auto",
    data_dir: str | None = None,
    domains: list[str] | None = None,
    default: str = "train",
    subsample: int | None = None,
):
    """Load a checkpoint and rebuild its domains from its own metadata.

    Args:
        checkpoint: path of a checkpoint written by ``landscape train``.
        device: ``--device``.
        data_dir: MNIST cache folder.
        domains: ``--domains``; ``None`` takes the checkpoint's training domains
            (``default="train"``) or its training then test domains (``default="all"``).
        subsample: keep the first ``n`` samples of each domain (one full batch).

    Returns:
        ``(model, metadata, {name: [(X, y)]}, loss_func)``.
    """
    from landscape.checkpoint import load_checkpoint
    from landscape.data import build_domains
    from landscape.device import resolve_device
    from landscape.domains import pick_domains, truncate
    from landscape.losses import build_loss

    if subsample is not None and subsample < 1:
        raise ValueError(f"--subsample must be a positive number of samples, got {subsample}")
    dev = resolve_device(device)
    model, meta = load_checkpoint(checkpoint, device=dev)
    if "data" not in meta:
        raise ValueError(
            f"{checkpoint} has no data spec in its metadata; it was not saved by "
            "landscape train, so its domains cannot be rebuilt"
        )
    dtype = next(model.parameters()).dtype
    all_domains = build_domains(meta["data"], data_dir=data_dir, device=dev, dtype=dtype)
    if domains is None:
        train = list(meta.get("train_domains") or all_domains)
        domains = train
        if default == "all":
            domains = train + [d for d in meta.get("test_domains", []) if d not in train]
    chosen = pick_domains(all_domains, domains)
    if subsample is not None:
        chosen = truncate(chosen, subsample)
    return model, meta, chosen, build_loss(meta.get("loss", "bce"))
