"""Errors shared by every layer: one line, naming the offending thing and the next step."""

from __future__ import annotations


class FactorgymError(Exception):
    """Base class of every error factorgym raises on purpose."""


class ConfigError(FactorgymError, ValueError):
    """A configuration value is wrong; the message names the key, the value and what is expected."""


class DataValidationError(FactorgymError, ValueError):
    """Candles broke a rule; the message names the file or symbol, the row/timestamp and the rule."""


class MissingExtraError(FactorgymError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, package: str, extra: str, purpose: str = "") -> None:
        what = f" for {purpose}" if purpose else ""
        super().__init__(
            f"{package} is required{what} but is not installed: "
            f"run `pip install 'factorgym[{extra}]'`"
        )
        self.package = package
        self.extra = extra
