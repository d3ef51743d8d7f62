"""Candles that arrive one closed bar at a time: the paper exchange's growing feed, and the clock of
a paper run on a real exchange's live candles.

:class:`CandleFeed` holds the bars a :class:`~factorgym.envs.live.paper.PaperExchange` fills against,
in the same shapes as a tensor (``timestamps``, ``prices`` [T, A, 5] with NaN where the exchange
delivered no bar, ``tradable``, the env's ``price_records``), grown by :meth:`CandleFeed.append`.
The exchange appends a bar only through ``PaperExchange.add_candles``, which writes it to the event
log first: a restart, ``state_at`` and ``paper status`` rebuild the feed from the log alone.

:class:`LiveCandles` is the loop's clock over such a feed. It waits (by the source's clock) until a
bar has closed, fetches the closed candles from a :class:`CandleSource` (the ccxt adapter lives in
``agents/live/market_data.py``), logs them and advances the exchange. Rules:

* a bar the source does not deliver by the time it is needed is a gap, fed as the store marks it
  (untradable; the env carries the last close; volume 0);
* a bar already logged that the source later serves differently (revised, or delivered late after
  being a gap) is a ``candle_revised`` event; the logged bar stays the one used;
* a symbol the source stops serving (it refuses the symbol, ``delisted``, or sends no candle for
  ``stale_bars`` bars in a row, ``symbol_error``) goes on as gaps while the others trade; the event
  is logged once per symbol and :attr:`LiveCandles.unavailable` names it (the status line shows it);
* the loop's clock is the exchange's: after a restart the loop trades through the bars that closed
  while it was down, one at a time, exactly as an uninterrupted run would have.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable, Protocol

import numpy as np

from factorgym.data_layer.timeframes import timeframe_to_ms
from factorgym.envs.layouts import PRICE, price_records
from factorgym.errors import ConfigError

log = logging.getLogger(__name__)


class CandleFeed:
    """A growing candle set on a fixed bar grid (see the module docstring).

    Args:
        symbols: unified symbols, in the policy's order.
        timeframe: the bar length (``"1h"``).
        meta: extra tensor-like meta (``market_rules``); ``timeframe`` is set here.
    """

    def __init__(self, symbols: list[str], timeframe: str, meta: dict | None = None) -> None:
        self.symbols = list(symbols)
        self.timeframe = timeframe
        self.tf_ms = int(timeframe_to_ms(timeframe))
        self.meta = {**(meta or {}), "timeframe": timeframe}
        self.funding = None
        A = len(self.symbols)
        self._n = 0
        self._ts = np.zeros(64, np.int64)
        self._prices = np.full((64, A, 5), np.nan)
        self._ok = np.zeros((64, A), bool)
        self._records = np.zeros((64, A, len(PRICE)))
        self.index: dict[int, int] = {}

    def __len__(self) -> int:
        return self._n

    @property
    def timestamps(self) -> np.ndarray:
        return self._ts[: self._n]

    @property
    def prices(self) -> np.ndarray:
        return self._prices[: self._n]

    @property
    def tradable(self) -> np.ndarray:
        return self._ok[: self._n]

    @property
    def records(self) -> np.ndarray:
        return self._records[: self._n]

    @property
    def last_ts(self) -> int | None:
        return int(self._ts[self._n - 1]) if self._n else None

    def bar(self, ts: int) -> tuple[np.ndarray, np.ndarray] | None:
        """``(ohlcv [A, 5], ok [A])`` of the bar at ``ts``, or None when it is not in the feed."""
        k = self.index.get(int(ts))
        return None if k is None else (self._prices[k].copy(), self._ok[k].copy())

    def check_next(self, ts: int) -> None:
        """Raise ``ConfigError`` unless ``ts`` is the next bar on the grid (any bar when empty)."""
        last = self.last_ts
        if last is not None and int(ts) != last + self.tf_ms:
            raise ConfigError(f"candle feed: bar {int(ts)} does not follow {last} on the {self.timeframe} grid")

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` bars (a rolled-back transaction's bars are dropped)."""
        for k in range(int(n), self._n):
            self.index.pop(int(self._ts[k]), None)
        self._n = min(self._n, int(n))

    def append(self, ts: int, ohlcv: np.ndarray, ok: np.ndarray) -> None:
        """Add the closed bar at ``ts`` (the next on the grid): ``ohlcv`` float64 [A, 5], ``ok`` bool [A]
        (False: no bar delivered; its prices are ignored)."""
        ts = int(ts)
        self.check_next(ts)
        A = len(self.symbols)
        ohlcv = np.asarray(ohlcv, dtype=np.float64).reshape(A, 5)
        ok = np.asarray(ok, dtype=bool).reshape(A) & np.isfinite(ohlcv).all(axis=1)
        if self._n == len(self._ts):
            grow = len(self._ts)
            self._ts = np.concatenate([self._ts, np.zeros(grow, np.int64)])
            self._prices = np.concatenate([self._prices, np.full((grow, A, 5), np.nan)])
            self._ok = np.concatenate([self._ok, np.zeros((grow, A), bool)])
            self._records = np.concatenate([self._records, np.zeros((grow, A, len(PRICE)))])
        k = self._n
        self._ts[k] = ts
        self._prices[k] = np.where(ok[:, None], ohlcv, np.nan)
        self._ok[k] = ok
        # the env's record of this bar, from two bars: the carried mark (last tradable close) and this one
        mark = self._records[k - 1, :, PRICE.mark] if k else np.zeros(A)
        two_prices = np.stack([np.repeat(mark[:, None], 5, axis=1), self._prices[k]])
        two_ok = np.stack([mark > 0, ok])
        two = _Arrays(np.where(two_ok[..., None], two_prices, np.nan))
        self._records[k] = price_records(two, two_ok)[1]
        self.index[ts] = k
        self._n = k + 1


class _Arrays:
    def __init__(self, prices: np.ndarray) -> None:
        self.prices = prices


def candle_payload(ts: int, ohlcv: np.ndarray, ok: np.ndarray) -> dict[str, Any]:
    """The ``candle`` event's data: ``bars`` per asset, ``[o, h, l, c, v]`` or None (not delivered)."""
    return {"bar_ts": int(ts), "bars": [[float(x) for x in row] if good else None
                                        for row, good in zip(np.asarray(ohlcv).tolist(), np.asarray(ok).tolist())]}


def candle_from_payload(data: dict[str, Any], n_assets: int) -> tuple[int, np.ndarray, np.ndarray]:
    """``(ts, ohlcv [A, 5], ok [A])`` of a ``candle`` event's data."""
    bars = data["bars"]
    if len(bars) != n_assets:
        raise ConfigError(f"candle event of bar {data.get('bar_ts')} has {len(bars)} assets; expected {n_assets}")
    ohlcv = np.full((n_assets, 5), np.nan)
    ok = np.zeros(n_assets, bool)
    for i, b in enumerate(bars):
        if b is not None:
            ohlcv[i], ok[i] = b, True
    return int(data["bar_ts"]), ohlcv, ok


class CandleSource(Protocol):
    """Closed candles of a market-data source (``agents/live/market_data.py``: ccxt, public data)."""

    def now_ms(self) -> int:
        """The source's clock (the exchange's server time), UTC ms."""

    def closed_candles(self, symbols: list[str], timeframe: str, since: int, until: int) -> dict[int, dict[int, list]]:
        """``{asset: {ts: [o, h, l, c, v]}}`` of the closed bars with ``since <= ts <= until`` that the
        source has (network errors retried inside: it returns or raises a clear error)."""


class LiveCandles:
    """The clock of a paper run on live candles (see the module docstring).

    Args:
        exchange: the :class:`~factorgym.envs.live.paper.PaperExchange` over a :class:`CandleFeed`.
        source: where closed candles come from.
        delay_ms: wait this long after a bar's end before asking for it (exchanges publish a closed
            candle a moment after the boundary).
        poll_s: the longest sleep between two looks at the source's clock.
        overlap: bars before the feed's end fetched again to notice revised candles.
        stale_bars: a listed symbol without a candle for this many bars in a row is a ``symbol_error``.
        sleep: ``time.sleep`` (tests inject their own). :meth:`interrupt` ends a wait for a close.
    """

    def __init__(self, exchange: Any, source: CandleSource, *, delay_ms: int = 2_000, poll_s: float = 30.0,
                 overlap: int = 3, stale_bars: int = 24, sleep: Callable[[float], None] = time.sleep) -> None:
        self.exchange, self.source = exchange, source
        self.feed: CandleFeed = exchange.feed
        self.delay_ms, self.poll_s, self.overlap, self._sleep = int(delay_ms), float(poll_s), int(overlap), sleep
        self._fetched: dict[int, dict[int, list]] = {}
        self._stop = False
        self._fetched_until: int | None = None  # open time of the last bar closed when the source was asked
        self.stale_bars = int(stale_bars)
        self._reported: set = set()
        self._flagged: set[str] = set()  # symbols with a delisted / symbol_error event in the log
        for e in exchange.events:
            if e.kind == "candle_revised":
                self._reported.add((e.data["bar_ts"], e.data["symbol"], tuple(e.data["served"])))
            elif e.kind in ("delisted", "symbol_error"):
                self._flagged.add(e.data["symbol"])
        #: symbol -> why it has no candles now ("delisted", "no candles for N bars"); gaps until it is back
        self.unavailable: dict[str, str] = {}
        ok = self.feed.tradable
        listed = self.feed.records[-1, :, PRICE.mark] > 0 if len(self.feed) else np.zeros(len(self.feed.symbols), bool)
        self._missing = [int(np.argmax(ok[::-1, i])) if ok[:, i].any() else 0 for i in range(ok.shape[1])]
        self._missing = [m if listed[i] else 0 for i, m in enumerate(self._missing)]  # gaps in a row, per asset

    def interrupt(self) -> None:
        """Stop a wait for a bar's close (``run_loop`` calls it on Ctrl-C)."""
        self._stop = True

    # ---- the Clock protocol (the exchange's clock: bars are taken one at a time)
    def now_ms(self) -> int:
        now = self.exchange.now
        if now is None:
            raise ConfigError("the paper exchange's clock has not started: call LiveCandles.warm_up first")
        return int(now)

    def before_close(self, bar_ts: int, tf_ms: int) -> None:
        """Wait until bar ``bar_ts`` has closed by the source's clock and fetch the closed candles
        (network; called outside the event log's transaction)."""
        if self._fetched_until is not None and self._fetched_until >= bar_ts:
            return
        due = bar_ts + tf_ms + self.delay_ms
        while (now := int(self.source.now_ms())) < due:
            left = min((due - now) / 1000, self.poll_s)
            while left > 0:  # (in slices of at most a second, so a stop request is seen quickly)
                if self._stop:
                    raise KeyboardInterrupt("stop requested while waiting for a bar to close")
                self._sleep(min(left, 1.0))
                left -= 1.0
        last_closed = (now - self.delay_ms) // tf_ms * tf_ms - tf_ms
        since = (self.feed.last_ts + tf_ms if self.feed.last_ts is not None else bar_ts) - self.overlap * tf_ms
        self._fetched = self.source.closed_candles(self.feed.symbols, self.feed.timeframe, since, last_closed)
        self._fetched_until = last_closed
        self._note_refusals()

    def wait_for_close(self, bar_ts: int, tf_ms: int) -> None:
        """Log the candles up to bar ``bar_ts`` and advance the exchange past it (its fills, charges)."""
        if self.exchange.now is not None and self.exchange.now >= bar_ts + tf_ms:
            return
        self.before_close(bar_ts, tf_ms)
        self._log_revisions()
        self._append_until(bar_ts)
        self._log_unavailable(bar_ts)
        self.exchange.advance(bar_ts + tf_ms)

    def warm_up(self, history: int) -> int:
        """A new run: log the ``history`` closed bars up to the last closed one and start the exchange's
        clock there. Returns the first decision bar's open time."""
        if self.exchange.now is not None:
            raise ConfigError("warm_up: the paper exchange has already started (resume instead)")
        tf = self.feed.tf_ms
        now = int(self.source.now_ms())
        last_closed = (now - self.delay_ms) // tf * tf - tf
        first = last_closed - (int(history) - 1) * tf
        self._fetched = self.source.closed_candles(self.feed.symbols, self.feed.timeframe, first, last_closed)
        self._fetched_until = last_closed
        self._note_refusals()
        starts = [min(b) for b in self._fetched.values() if b]
        if not starts:
            raise ConfigError(f"the exchange has no {self.feed.timeframe} candles for {self.feed.symbols} since {first}")
        with self.exchange.batch():
            self._append_until(last_closed, first=max(first, min(starts)))
            self._log_unavailable(last_closed)
            self.exchange.advance(last_closed + tf)
        return last_closed

    # ---- internals
    def _append_until(self, bar_ts: int, first: int | None = None) -> None:
        A, tf = len(self.feed.symbols), self.feed.tf_ms
        start = self.feed.last_ts + tf if self.feed.last_ts is not None else int(first if first is not None else bar_ts)
        for ts in range(start, int(bar_ts) + 1, tf):
            ohlcv = np.full((A, 5), np.nan)
            ok = np.zeros(A, bool)
            for i in range(A):
                c = self._fetched.get(i, {}).get(ts)
                if c is not None and all(x is not None and math.isfinite(float(x)) for x in c[:5]):
                    ohlcv[i], ok[i] = [float(x) for x in c[:5]], True
            listed = self.feed.records[-1, :, PRICE.mark] > 0 if len(self.feed) else np.zeros(A, bool)
            if (listed & ~ok).any():  # (not before an asset's first candle: not listed yet)
                missing = [s for s, gap in zip(self.feed.symbols, listed & ~ok) if gap]
                log.info("bar %d: no candle for %s (a gap: untradable, last close carried)", ts, missing)
            for i, sym in enumerate(self.feed.symbols):
                self._missing[i] = self._missing[i] + 1 if listed[i] and not ok[i] else 0
                if ok[i]:
                    self.unavailable.pop(sym, None)
                elif self._missing[i] >= self.stale_bars and sym not in self.unavailable:
                    self.unavailable[sym] = f"no candles for {self._missing[i]} bars"
            self.exchange.add_candles(ts, ohlcv, ok)

    def _note_refusals(self) -> None:
        """Symbols the source refused on its last call are unavailable (``delisted``)."""
        for sym in getattr(self.source, "refused", None) or {}:
            self.unavailable[sym] = "delisted"

    def _log_unavailable(self, bar_ts: int) -> None:
        """A ``delisted`` / ``symbol_error`` event the first time a symbol is unavailable."""
        for sym, why in self.unavailable.items():
            if sym in self._flagged:
                continue
            self._flagged.add(sym)
            kind = "delisted" if why == "delisted" else "symbol_error"
            detail = (getattr(self.source, "refused", None) or {}).get(sym, why)
            self.exchange.events.append(kind, int(bar_ts), bar_ts=int(bar_ts), symbol=sym, reason=detail)
            log.warning("%s: %s (%s); its bars are gaps (untradable, last close carried), the other symbols "
                        "trade on", sym, kind, detail)

    def _log_revisions(self) -> None:
        """A ``candle_revised`` event for each logged bar the source now serves differently."""
        for i, bars in self._fetched.items():
            sym = self.feed.symbols[i]
            for ts, c in sorted(bars.items()):
                logged = self.feed.bar(ts)
                if logged is None:
                    continue
                served = tuple(float(x) for x in c[:5])
                was = logged[0][i].tolist() if logged[1][i] else None
                if was is not None and tuple(was) == served:
                    continue
                key = (int(ts), sym, served)
                if key in self._reported:
                    continue
                self._reported.add(key)
                self.exchange.events.append("candle_revised", int(ts), bar_ts=int(ts), symbol=sym, logged=was,
                                            served=list(served))
                log.warning("%s bar %d: the exchange now serves a different candle %s (logged %s); the logged one "
                            "stays in use", sym, ts, list(served), was)
