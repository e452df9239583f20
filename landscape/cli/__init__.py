"""The ``landscape`` command: ``landscape {reproduce,train,curvature,score,surface,figures,data}``.

Each sub-command lives in ``landscape/cli/<name>.py`` with ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Errors on bad input print one line
``landscape <command>: error: ...`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ["reproduce", "train", "curvature", "score", "surface", "figures", "data"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="landscape",
        description="Loss-landscape inconsistency between training domains (Fishr, I^eps).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"landscape.cli.{name}")
        except ModuleNotFoundError as err:  # a command still under construction
            if err.name == f"landscape.cli.{name}":
                continue
            raise
        cmd = sub.add_parser(
            name,
            help=module.HELP,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(cmd)
        cmd.set_defaults(_module=module, _parser=cmd)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as err:
        args._parser.error(str(err))  # one line, exit status 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
