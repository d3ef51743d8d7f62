"""Progress bars that behave: a tqdm bar on a terminal, plain log lines elsewhere.

* On a terminal (stderr is a TTY) :func:`progress_bar` is a tqdm bar, and the CLI routes log
  records through ``tqdm.write`` while it runs (:func:`logs_above_bars`), so a log line never
  lands in the middle of a bar.
* When stderr is not a terminal (a pipe, a log file, CI) there is no bar: a line
  ``<desc>: <n>/<total> <unit> (<pct>%)`` is logged at most every :data:`LINE_SECONDS` seconds and
  once at the end, so logs stay readable and carriage returns never reach a file.
* ``enabled=False`` gives a silent object with the same methods.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time

log = logging.getLogger("factorgym.progress")

LINE_SECONDS = 10.0


class LineProgress:
    """The non-terminal stand-in for a tqdm bar: ``update``/``close``/``set_postfix_str`` and
    iteration, logging a line now and then instead of redrawing."""

    def __init__(self, iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 quiet: bool = False) -> None:
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc, self.unit, self.quiet = desc, unit, quiet
        self.n = 0
        self._last = time.monotonic()
        self._closed = False
        self.postfix = ""

    def _line(self) -> str:
        of = f"/{self.total}" if self.total else ""
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        return f"{self.desc}: {self.n}{of} {self.unit}{pct}{' ' + self.postfix if self.postfix else ''}"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if not self.quiet and now - self._last >= LINE_SECONDS:
            self._last = now
            log.info(self._line())

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = text

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        if not self._closed and not self.quiet and self.n:
            log.info(self._line())
        self._closed = True

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def progress_bar(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 enabled: bool = True, leave: bool = False, initial: int = 0):
    """A tqdm bar on a terminal, a :class:`LineProgress` elsewhere, a silent one when disabled."""
    if not enabled or not stderr_is_terminal():
        bar = LineProgress(iterable, total=total, desc=desc, unit=unit, quiet=not enabled)
        bar.n = int(initial)
        return bar
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr, dynamic_ncols=True,
                initial=initial, unit_scale=unit == "step")


@contextlib.contextmanager
def logs_above_bars():
    """While active, log records on a terminal go through ``tqdm.write`` (above any bar)."""
    if not stderr_is_terminal():
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        yield
