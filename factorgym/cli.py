"""``factorgym`` command line: ``factorgym <command> --help`` explains every option."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from factorgym import __version__
from factorgym.errors import FactorgymError
from factorgym.progress import logs_above_bars

# Modules under factorgym.commands, each adding one or more subcommands, in --help order.
COMMAND_MODULES = [
    "download", "data", "factors", "train", "backtest", "quickstart", "runs", "evaluate",
    "tune", "paper", "live",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="factorgym",
        description="Point-in-time crypto data, factor tensors and a Gymnasium trading env.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"factorgym {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"factorgym.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"factorgym.commands.{name}":
                continue  # command not built yet
            raise
        module.add_parser(sub)
    _describe(sub)
    return parser


def _describe(sub: argparse._SubParsersAction) -> None:
    """Every subcommand's ``--help`` opens with a description: its one-line help where none was
    written (recursively, for sub-subcommands too)."""
    helps = {a.dest: a.help for a in sub._choices_actions}
    for name, parser in sub.choices.items():
        if not parser.description and helps.get(name):
            parser.description = helps[name][0].upper() + helps[name][1:] + "."
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                _describe(action)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with logs_above_bars():  # a log line never lands inside a progress bar
            return int(args.func(args) or 0)
    except FactorgymError as exc:  # one clear line, no traceback
        print(f"factorgym {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
