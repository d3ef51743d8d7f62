"""The one in-memory candle layout every source returns and the store keeps.

A candle frame is a ``pandas.DataFrame`` with exactly :data:`CANDLE_COLUMNS`: ``timestamp`` is the
bar's open time as int64 UTC milliseconds; prices and volume (base currency) are float64. Rows are
sorted by timestamp and unique. ``tradable`` is optional (bool): False for a gap bar that a
validation policy kept for valuation (last close carried, zero volume).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CANDLE_COLUMNS = ["timestamp", "open", "high", "low", "close", "volume"]
PRICE_COLUMNS = ["open", "high", "low", "close"]


def empty_candles() -> pd.DataFrame:
    """A candle frame with no rows and the right dtypes."""
    return pd.DataFrame(
        {
            "timestamp": np.empty(0, dtype=np.int64),
            **{c: np.empty(0, dtype=np.float64) for c in CANDLE_COLUMNS[1:]},
        }
    )


def candles_from_rows(rows) -> pd.DataFrame:
    """Frame from ccxt-style rows ``[ts, o, h, l, c, v]`` (already validated)."""
    if len(rows) == 0:
        return empty_candles()
    arr = np.asarray(rows, dtype=np.float64)
    frame = pd.DataFrame(arr[:, 1:6], columns=CANDLE_COLUMNS[1:])
    frame.insert(0, "timestamp", arr[:, 0].astype(np.int64))
    return frame
