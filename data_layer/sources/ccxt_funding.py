"""Funding-rate history of perpetual swaps from a ccxt exchange, page by page, checked page by page.

:func:`iter_funding` pages ccxt's ``fetch_funding_rate_history`` forward from ``since`` (the next
page starts 1 ms after the newest event received; ``until`` is passed as the end) and stops at the
first page shorter than the page limit. Requests go through :class:`CcxtSource`'s retry rules
(``OperationFailed``/``NetworkError`` family and malformed pages retried with backoff, bounded;
``ExchangeError`` fails at once). Each page is checked before it is used: a JSON list (an HTML or
cut body is retried, never read as "no events"), every row an object with an integer time and a
finite numeric rate of the asked symbol -- seen before ccxt's own filter, which silently drops rows
without a time -- times strictly increasing from ``start``, no more rows than asked for. Events at or
after ``until`` are dropped (an exchange may ignore the end time).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator

import numpy as np
import pandas as pd

from factorgym.data_layer.sources.ccxt_source import BadPage, CcxtSource
from factorgym.data_layer.timeframes import ms_to_iso
from factorgym.errors import ConfigError


def market_types_for(symbols) -> tuple[str, ...]:
    """Binance market kinds needed for ``symbols``: spot, plus ``linear`` for a swap settled in its
    quote (``BTC/USDT:USDT``) and ``inverse`` for one settled in its base (``BTC/USD:BTC``)."""
    kinds = ["spot"]
    for s in symbols:
        if ":" not in s:
            continue
        pair, settle = s.split(":", 1)
        base = pair.split("/")[0]
        kind = "inverse" if settle.split("-")[0] == base else "linear"
        if kind not in kinds:
            kinds.append(kind)
    return tuple(kinds)


def check_funding(source: CcxtSource, symbol: str) -> None:
    """Fail fast unless ``symbol`` is a swap market whose funding history the exchange serves."""
    if not source.exchange.has.get("fetchFundingRateHistory"):
        raise ConfigError(f"{source.name} does not offer funding-rate history (has['fetchFundingRateHistory'] is false)")
    markets = source.load_markets()
    if symbol not in markets:
        close = difflib.get_close_matches(symbol, list(markets), n=3)
        raise ConfigError(f"{source.name} has no market {symbol!r}"
                          + (f"; did you mean {', '.join(close)}?" if close else ""))
    market = markets[symbol]
    if not market.get("swap"):
        hint = f"{symbol}:{market.get('quote')}" if ":" not in symbol else "a perpetual swap symbol"
        raise ConfigError(f"{source.name} {symbol} is a {market.get('type')} market: funding rates exist for "
                          f"perpetual swaps only, e.g. {hint}")


def _hook(source: CcxtSource) -> None:
    """Watch ccxt's funding parsers (once per source) so a non-list body and rows ccxt would drop
    are seen; :attr:`CcxtSource._page_log` is set only while a checked request runs."""
    ex = source.exchange
    if getattr(ex, "_factorgym_funding_hooked", False):
        return
    parse_many, parse_one = ex.parse_funding_rate_histories, ex.parse_funding_rate_history

    def parse_funding_rate_histories(response, *args, **kwargs):
        log = source._page_log
        if log is not None:
            log["container"] = type(response).__name__
            log["ok_container"] = isinstance(response, (list, tuple))
            if not log["ok_container"]:
                return []  # a string body would be parsed character by character
        return parse_many(response, *args, **kwargs)

    def parse_funding_rate_history(contract, *args, **kwargs):
        log = source._page_log
        if log is not None and not isinstance(contract, dict):
            raise BadPage(f"funding row is not an object: {contract!r}"[:200])
        entry = parse_one(contract, *args, **kwargs)
        if log is not None:
            log["rows"].append(entry)
        return entry

    ex.parse_funding_rate_histories = parse_funding_rate_histories
    ex.parse_funding_rate_history = parse_funding_rate_history
    ex._factorgym_funding_hooked = True


def check_page(rows, seen: dict, symbol: str, start: int, stop: int, want: int) -> np.ndarray:
    """A page as float64 ``[n, 2]`` (time, rate) or :class:`BadPage`."""
    if not seen["ok_container"]:
        raise BadPage(f"response body is not a JSON list (ccxt got a {seen['container']}: HTML or truncated?)")
    if not isinstance(rows, list):
        raise BadPage(f"fetch_funding_rate_history returned {type(rows).__name__}, not a list")
    raw = seen["rows"]
    if len(raw) > want:
        raise BadPage(f"{len(raw)} funding rows for a limit of {want}")
    out = np.empty((len(raw), 2))
    for i, entry in enumerate(raw):
        ts, rate = entry.get("timestamp"), entry.get("fundingRate")
        if not isinstance(ts, int) or isinstance(rate, bool) or not isinstance(rate, (int, float)):
            raise BadPage(f"funding row with a missing or non-numeric field: {entry.get('info')!r}"[:200])
        if entry.get("symbol") not in (None, symbol):
            raise BadPage(f"funding row of {entry.get('symbol')!r} in a page for {symbol}")
        out[i] = ts, rate
    if not np.isfinite(out[:, 1]).all():
        raise BadPage("funding row with a non-finite rate")
    ts = out[:, 0]
    if len(ts) and ((ts < start).any() or (np.diff(ts) <= 0).any()):
        raise BadPage(f"funding times out of order, duplicated or before the requested start {start}")
    return out


def fetch_page(source: CcxtSource, symbol: str, start: int, stop: int, want: int) -> np.ndarray:
    """One checked page of events with ``start <= time < stop``, retried as :meth:`CcxtSource._call` does."""
    _hook(source)

    def fetch():
        source._page_log = {"rows": [], "ok_container": True, "container": None}
        try:
            rows = source.exchange.fetch_funding_rate_history(symbol, since=start, limit=want,
                                                              params={"until": stop - 1})
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            raise BadPage(f"unparseable response ({type(exc).__name__}: {exc})") from exc
        finally:
            seen, source._page_log = source._page_log, None
        return check_page(rows, seen, symbol, start, stop, want)

    return source._call(fetch, f"{symbol} funding page from {ms_to_iso(start)} ({start})")


def iter_funding(source: CcxtSource, symbol: str, since: int, until: int | None = None) -> Iterator[pd.DataFrame]:
    """Funding events with ``since <= time < until`` (UTC ms; None = up to the exchange's now), one
    checked frame (``timestamp``, ``funding_rate``) per page, oldest first. Sets ``source.last_now_ms``."""
    check_funding(source, symbol)
    now = source.server_now()
    source.last_now_ms = now
    stop = now + 1 if until is None else min(int(until), now + 1)
    start = int(since)
    while start < stop:
        rows = fetch_page(source, symbol, start, stop, source.page_limit)
        keep = rows[rows[:, 0] < stop]  # an exchange that ignores the end time
        if len(keep):
            yield pd.DataFrame({"timestamp": keep[:, 0].astype(np.int64), "funding_rate": keep[:, 1]})
        if len(rows) < source.page_limit or len(keep) < len(rows):
            break  # the exchange has no more events before ``stop``
        start = int(rows[-1, 0]) + 1
