"""The ``landscape`` command: ``landscape {reproduce,train,sweep,collect,curvature,score,
surface,figures,data}``.

Each sub-command lives in ``landscape/cli/<name>.py`` with ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``; this package is argparse only, the work
is done by library calls. Every sub-command also takes ``--threads N`` (torch and BLAS
threads, :func:`landscape.device.set_threads`), and no option may be abbreviated
(``--data`` is not read as ``--data-dir``). Errors on bad input print one line
``landscape <command>: error: ...`` and exit with status 2; ``--out`` is checked writable
before anything is computed, OS errors exit with 1 and Ctrl-C with 130 (one line each), and
library warnings print as one line ``landscape: note: ...`` (``landscape/cli/_faults.py``).
``score``, ``curvature`` and ``surface`` also run under ``torchrun --nproc_per_node N -m
landscape ...`` (``landscape/cli/_distributed.py``): rank 0 prints and writes.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from landscape.cli._common import add_threads_argument
from landscape.cli._distributed import launched_command
from landscape.cli._faults import check_writable, one_line_warnings, os_error_line

COMMANDS = [
    "reproduce",
    "train",
    "sweep",
    "collect",
    "curvature",
    "score",
    "surface",
    "figures",
    "data",
]


def build_parser() -> argparse.ArgumentParser:
    """The ``landscape`` parser with one sub-parser per command (abbreviations refused)."""
    parser = argparse.ArgumentParser(
        prog="landscape",
        description="Loss-landscape inconsistency between training domains (Fishr, I^eps).",
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"landscape.cli.{name}")
        cmd = sub.add_parser(
            name,
            help=module.HELP,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,  # not inherited from the main parser
        )
        module.add_arguments(cmd)
        add_threads_argument(cmd)
        cmd.set_defaults(_module=module, _parser=cmd)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``landscape`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    The command runs with ``--threads`` threads; the previous thread counts are restored
    when it returns, so calling ``main`` from Python leaves the caller's settings alone.
    ``--out`` is checked writable before anything is computed. Bad input exits with 2, an
    OS error (permission, disk full, read-only) with 1 and Ctrl-C with 130, each as one line
    ``landscape <command>: ...``; what finished stays written (results are written
    atomically). Library warnings print as one line ``landscape: note: ...`` each.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    from landscape.device import set_threads

    prog = f"landscape {args.command}"
    from landscape.distributed import DistributedError

    try:
        with one_line_warnings(), set_threads(args.threads), launched_command(args):
            if getattr(args, "out", None) is not None:
                check_writable(args.out)
            return int(args._module.run(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as err:
        args._parser.error(str(err))  # one line, exit status 2
    except DistributedError as err:  # torchrun: another rank failed (its message)
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"{prog}: error: {os_error_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        where = f"; what finished is kept in {args.out}" if getattr(args, "out", None) else ""
        print(f"{prog}: interrupted{where}", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
