"""Config keys are checked, never ignored: an unknown key is a one-line :class:`ConfigError`
naming where it is, the key, the closest allowed key and the allowed set.

Every YAML loader calls :func:`check_keys` on each mapping it reads (top level and nested), so a
typo such as ``normalize:`` for ``normalise:`` stops the run instead of silently doing nothing.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from factorgym.errors import ConfigError


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keys(mapping: Mapping, allowed: Iterable[str], where: str) -> None:
    """Raise :class:`ConfigError` for the first key of ``mapping`` not in ``allowed``.

    >>> check_keys({"normalize": {}}, {"data", "factors", "normalise"}, "build.yaml")
    Traceback (most recent call last):
    ...
    factorgym.errors.ConfigError: build.yaml: unknown key 'normalize' (did you mean 'normalise'?); allowed: data, factors, normalise
    """
    allowed = set(allowed)
    for key in mapping:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {key!r}{did_you_mean(key, allowed)}; "
                              f"allowed: {', '.join(sorted(map(str, allowed)))}")
