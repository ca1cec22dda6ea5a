"""The ``machinewatch`` command line.

Subcommands live one per module in :mod:`machinewatch.engine.commands`; each module defines
``NAME``, ``HELP``, ``add_arguments(parser)`` and ``main(args) -> int``. They are found by
scanning that package, so adding a command touches no other file.
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import importlib
import logging
import pkgutil
import sys

from machinewatch.engine import commands
from machinewatch.engine.errors import MachinewatchError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every discovered subcommand."""
    parser = argparse.ArgumentParser(
        prog="machinewatch", description="Predictive-maintenance engine for industrial edge gateways."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{commands.__name__}.{info.name}")
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_main=mod.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        rc: int = args._main(args)
    except MachinewatchError as exc:
        print(f"machinewatch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
