"""Arguments shared by several sub-commands."""

from __future__ import annotations

import argparse


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        help="torch device: auto (CUDA when present, else CPU), cpu, cuda, cuda:N",
    )


def add_out_argument(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--out", default=default, help=f"output directory (default: {default})")


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
