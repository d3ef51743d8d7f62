"""Public market data of a real exchange for paper trading on live candles (no keys needed).

:class:`LiveMarketData` is the :class:`~factorgym.envs.live.candle_feed.CandleSource` over the data
layer's :class:`~factorgym.data_layer.sources.ccxt_source.CcxtSource`: ccxt's real exchange class
with its rate limiter on (``enableRateLimit``), closed bars only, every page checked, transient
faults (5xx, 429/418 with ``Retry-After``, timeouts, dropped connections, garbled pages) retried
with capped exponential backoff. Here a call that still fails after the source's retries is tried
again after a pause, for ever (a warning each time): a flaky network delays the loop, it never
stops it. A refusal (a bad request) is not retried: it raises at once, except ccxt's ``BadSymbol``
on one symbol's candles (delisted mid-run): that symbol has no candles this time (its bars become
gaps) and :attr:`LiveMarketData.refused` says why, while the other symbols are served as usual.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import numpy as np

from factorgym.data_layer.sources.ccxt_source import CcxtSource, DownloadError

log = logging.getLogger(__name__)


class LiveMarketData:
    """Closed candles, market rules and the server clock of ``exchange_id`` (see the module docstring).

    Args:
        exchange_id: a ccxt id (``"binance"``).
        base_url: send every call here (a loopback fake exchange, a proxy).
        max_retries, backoff_base, backoff_cap: the source's retries of one call (seconds).
        pause_cap: the longest pause between two rounds of retries of a call that kept failing.
        sleep: ``time.sleep`` (tests inject theirs).
    """

    def __init__(self, exchange_id: str, *, base_url: str | None = None, max_retries: int = 8,
                 backoff_base: float = 0.5, backoff_cap: float = 30.0, pause_cap: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.id = exchange_id
        self.source = CcxtSource(exchange_id, base_url=base_url, max_retries=max_retries, backoff_base=backoff_base,
                                 backoff_cap=backoff_cap, progress=False, sleep=sleep)
        self.pause_cap, self._sleep = float(pause_cap), sleep
        self.failures = 0  # calls that failed after all the source's retries (then tried again)
        self.refused: dict[str, str] = {}  # symbol -> the exchange's refusal of its last candle request

    def _persist(self, fn: Callable[[], Any], what: str) -> Any:
        """``fn()`` until it succeeds; a refusal by the exchange is raised at once."""
        rounds = 0
        while True:
            try:
                return fn()
            except DownloadError as exc:
                if exc.__context__ is not None:  # (raised while handling a refusal: not a network fault)
                    raise
                self.failures += 1
                pause = min(self.pause_cap, self.source.retry.backoff_base * 2.0 ** min(rounds, 30))
                log.warning("%s %s: %s; trying again in %.1fs", self.id, what, exc, pause)
                self._sleep(pause)
                rounds += 1

    def market_rules(self, symbols: list[str], timeframe: str) -> dict[str, dict]:
        """``{symbol: MarketRules.to_dict()}`` (``tensor.meta['market_rules']``'s form); a one-line
        error for a symbol or timeframe the exchange does not have."""
        self._persist(self.source.load_markets, "load_markets")
        for s in symbols:
            self.source.check(s, timeframe)
        return {s: self.source.market_rules(s).to_dict() for s in symbols}

    def now_ms(self) -> int:
        return int(self._persist(self.source.server_now, "fetch_time"))

    def closed_candles(self, symbols: list[str], timeframe: str, since: int, until: int) -> dict[int, dict[int, list]]:
        """``{asset: {ts: [o, h, l, c, v]}}`` of the closed bars with ``since <= ts <= until``."""
        from factorgym.data_layer.timeframes import timeframe_to_ms

        tf = timeframe_to_ms(timeframe)
        out: dict[int, dict[int, list]] = {}
        for i, sym in enumerate(symbols):
            try:
                df = self._persist(lambda: self.source.fetch(sym, timeframe, int(since), int(until) + tf),  # noqa: B023
                                   f"{sym} {timeframe} candles")
            except DownloadError as exc:
                if not _bad_symbol(exc):
                    raise
                self.refused[sym] = str(exc)
                out[i] = {}
                continue
            self.refused.pop(sym, None)
            rows = df[["timestamp", "open", "high", "low", "close", "volume"]].to_numpy(np.float64) if len(df) else []
            out[i] = {int(r[0]): [float(x) for x in r[1:6]] for r in rows}
        return out


def _bad_symbol(exc: DownloadError) -> bool:
    """The source's refusal was ccxt's ``BadSymbol`` (the exchange no longer serves the symbol)."""
    return any(c.__name__ == "BadSymbol" for c in type(exc.__context__).__mro__)
