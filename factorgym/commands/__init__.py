"""Subcommands of the ``factorgym`` CLI. Each module defines ``add_parser(subparsers)`` that
registers its parser with ``set_defaults(func=run)``; heavy imports happen inside ``run``."""

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's line breaks and shows each option's default, unless its help text
    already says it or there is none to show (None, False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)
