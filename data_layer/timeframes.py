"""Timeframes and timestamps in ccxt's vocabulary: ``1m``/``1h``/``1d`` and UTC milliseconds."""

from __future__ import annotations

import datetime as _dt
import re

import numpy as np
import pandas as pd

from factorgym.errors import ConfigError

_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_TF_RE = re.compile(r"^(\d+)([smhdw])$")

MS_PER_YEAR = 365 * 86_400_000  # crypto trades 24/7: annualise on calendar time


_CALENDAR_RE = re.compile(r"^(\d+)([My])$")
_DAY_MS = 86_400_000


def calendar_error(what: str) -> ConfigError:
    """The one message for calendar-month/year bars, wherever they are met."""
    return ConfigError(
        f"{what}: monthly and yearly bars (ccxt's 1M, 1y) are not supported: factorgym needs bars of "
        f"one fixed length and months run 28 to 31 days; use 1d or 1w bars (1w opens on Monday, as ccxt's)"
    )


def timeframe_to_ms(timeframe: str) -> int:
    """Length of one bar in milliseconds (``"1h"`` -> 3_600_000; ``1w`` is 7 days).

    Calendar months and years (``1M``, ``1y``) have no fixed length and are refused with a message
    that says so.
    """
    if _CALENDAR_RE.match(str(timeframe).strip()):
        raise calendar_error(f"timeframe {timeframe!r}")
    m = _TF_RE.match(str(timeframe).strip())
    if not m or int(m.group(1)) <= 0:
        raise ConfigError(
            f"timeframe {timeframe!r} is not understood: use ccxt's form, e.g. 1m, 5m, 1h, 4h, 1d, 1w"
        )
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


def grid_phase(first_ms: int, timeframe_ms: int) -> int:
    """Offset of a series' bar grid from the epoch grid: bars longer than a day may open at any
    whole-day phase (ccxt's ``1w`` bars open on Monday, the epoch was a Thursday); shorter bars and
    bars not opening at midnight UTC have phase 0."""
    if timeframe_ms > _DAY_MS and first_ms % _DAY_MS == 0:
        return int(first_ms % timeframe_ms)
    return 0


def bars_per_year(timeframe: str) -> float:
    """Bars in a 365-day year of a 24/7 market (8760 for ``1h``)."""
    return MS_PER_YEAR / timeframe_to_ms(timeframe)


def to_utc_ms(value: str | int | float | _dt.datetime | pd.Timestamp | np.datetime64 | None) -> int | None:
    """Parse a user-given time (``2023-01-01``, ISO with zone, epoch s or ms) into UTC milliseconds.

    Naive strings are taken as UTC. Integers below 1e11 are seconds, above are milliseconds.
    """
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) or (isinstance(value, float) and float(value).is_integer()):
        v = int(value)
        return v * 1000 if abs(v) < 100_000_000_000 else v
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return to_utc_ms(int(value.strip()))
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"time {value!r} is not understood: use e.g. 2023-01-01, 2023-01-01T12:00Z or epoch ms") from exc
    if ts is pd.NaT:
        raise ConfigError(f"time {value!r} is not a valid time")
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return int(ts.tz_convert("UTC").value // 1_000_000)  # .value is nanoseconds whatever the unit


def ms_to_iso(ms: int | None) -> str:
    """Readable UTC time for messages and reports."""
    if ms is None:
        return "-"
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M")
