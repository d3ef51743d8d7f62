"""Subcommands of the ``factorgym`` CLI. Each module defines ``add_parser(subparsers)`` that
registers its parser with ``set_defaults(func=run)``; heavy imports happen inside ``run``."""
