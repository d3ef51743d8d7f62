"""The candles one fetch brought, as one panel: ``times`` [n] and ``ohlcv`` [n, A, 5], NaN where a
symbol had no candle. Built from ccxt's ``fetch_ohlcv`` pages or the paper exchange's numpy columns
(``ohlcv_arrays``) with array operations, so the loop never keeps a Python list per candle."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

FIELDS = ("open", "high", "low", "close", "volume")
PAGE = 1000  # candles asked per request (ccxt's common maximum)


class CandlePanel:
    """Candles of ``A`` symbols by open time: ``times`` int64 [n] ascending, ``ohlcv`` float64 [n, A, 5]
    (a row of NaN: the symbol has no candle at that time; a candle with a missing field has a NaN)."""

    __slots__ = ("times", "ohlcv")

    def __init__(self, times: np.ndarray, ohlcv: np.ndarray) -> None:
        self.times, self.ohlcv = times, ohlcv

    def __len__(self) -> int:
        return len(self.times)

    def _at(self, ts: int) -> int:
        k = int(self.times.searchsorted(ts))
        return k if k < len(self.times) and int(self.times[k]) == ts else -1

    def bar(self, ts: int) -> np.ndarray:
        """OHLCV float64 [A, 5] of the bar opening at ``ts`` (a new array; NaN rows where none)."""
        k = self._at(ts)
        return self.ohlcv[k].copy() if k >= 0 else np.full(self.ohlcv.shape[1:], np.nan)

    def opens(self, ts: int) -> dict[int, float]:
        """``{asset: open}`` of the symbols that have a candle (with an open) at ``ts``."""
        k = self._at(ts)
        if k < 0:
            return {}
        return {i: o for i, o in enumerate(self.ohlcv[k, :, 0].tolist()) if o == o}

    def first_time(self) -> int | None:
        return int(self.times[0]) if len(self.times) else None


def fetch_panel(symbols: Sequence[str], since: int, tf_ms: int, *,
                fetch_ohlcv: Callable[..., Any] | None = None,
                ohlcv_arrays: Callable[..., Any] | None = None,
                ohlcv_panel: Callable[..., Any] | None = None) -> CandlePanel:
    """Every candle the exchange has from ``since`` for each symbol, paged ``PAGE`` at a time: through
    ``ohlcv_panel(symbols, since=, limit=)`` (all symbols at once, the paper exchange's), else
    ``ohlcv_arrays(symbol, since=, limit=)`` (numpy columns), else ccxt's
    ``fetch_ohlcv(symbol, since=, limit=)``. A candle before the page's ``since`` is ignored, and a
    repeated time keeps the first candle served for it (an exchange that pages with an overlap)."""
    if ohlcv_panel is not None:
        return _panel_pages(list(symbols), int(since), tf_ms, ohlcv_panel)
    per: list[tuple[np.ndarray, np.ndarray]] = []
    for sym in symbols:
        times, rows = [], []
        cursor = int(since)
        while True:
            if ohlcv_arrays is not None:
                cols = ohlcv_arrays(sym, since=cursor, limit=PAGE)
                t = np.asarray(cols["time"], dtype=np.int64)
                r = np.empty((len(t), 5))
                for j, f in enumerate(FIELDS):
                    r[:, j] = cols[f]
            else:
                page = np.array(fetch_ohlcv(sym, since=cursor, limit=PAGE), dtype=np.float64).reshape(-1, 6)
                t, r = page[:, 0].astype(np.int64), page[:, 1:]
            keep = t >= cursor
            times.append(t[keep])
            rows.append(r[keep])
            if len(t) < PAGE or not keep.any():
                break
            cursor = int(t[keep].max()) + tf_ms
        per.append(_first_served(times, rows))
    all_times = per[0][0]
    if any(len(t) != len(all_times) or not np.array_equal(t, all_times) for t, _ in per[1:]):
        all_times = np.unique(np.concatenate([t for t, _ in per]))
    ohlcv = np.full((len(all_times), len(per), 5), np.nan)
    for i, (t, r) in enumerate(per):
        if len(t) == len(all_times):  # (the common case: every symbol has every bar)
            ohlcv[:, i] = r
        else:
            ohlcv[all_times.searchsorted(t), i] = r
    return CandlePanel(all_times, ohlcv)


def _panel_pages(symbols: list[str], since: int, tf_ms: int, ohlcv_panel: Callable[..., Any]) -> CandlePanel:
    """:func:`fetch_panel` through an exchange's ``ohlcv_panel`` (pages of ``PAGE`` bar times)."""
    times, rows = [], []
    cursor = since
    while True:
        page = ohlcv_panel(symbols, since=cursor, limit=PAGE)
        t, r = np.asarray(page["time"], dtype=np.int64), np.asarray(page["ohlcv"], dtype=np.float64)
        keep = t >= cursor
        if np.count_nonzero(keep) != keep.size:
            t, r = t[keep], r[keep]
        times.append(t)
        rows.append(r)
        if len(keep) < PAGE or not len(t):
            break
        cursor = int(t.max()) + tf_ms
    return CandlePanel(*_first_served(times, rows))


def _first_served(times: list[np.ndarray], rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The pages joined, by time; a time served more than once keeps its first candle."""
    t, r = (times[0], rows[0]) if len(times) == 1 else (np.concatenate(times), np.concatenate(rows))
    if len(t) > 1 and not (t[1:] > t[:-1]).all():  # (out of order or repeated)
        t, first = np.unique(t, return_index=True)
        r = r[first]
    return t, r
