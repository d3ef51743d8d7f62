"""Resumable candle downloads from a ccxt exchange into the candle store.

For each symbol, :func:`download` starts after the newest stored bar (or at ``since`` when nothing
is stored), writes validated pages to the store in batches (atomic writes, see :class:`_Batcher`: a
kill loses at most the batch in flight, refetched on resume), stores the market rules, then
validates the whole stored series with the
``drop`` gap policy and reports its gaps. Raw candles are stored; gaps are reported, never filled.
Running it again with the same arguments fetches nothing new and changes nothing.

With ``funding=True`` (swap markets only, e.g. ``BTC/USDT:USDT``) each symbol's funding-rate
history is downloaded too, after its candles, into the store's funding series
(``data_layer/funding.py``): from the newest stored event (or ``since``) up to ``until`` or the
exchange's now, with the same paging, retries, page checks, batching and atomic writes.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import pandas as pd

from factorgym.data_layer.sources.ccxt_source import CcxtSource
from factorgym.data_layer.timeframes import ms_to_iso, timeframe_to_ms, to_utc_ms
from factorgym.errors import ConfigError

log = logging.getLogger(__name__)

FLUSH_SECONDS = 2.0  # fetched pages wait in memory at most this long before an atomic store write...
FLUSH_ROWS = 20_000  # ...or until this many bars are buffered...
WRITE_SHARE = 0.1  # ...but never sooner than 1/WRITE_SHARE times the last write took after it


class _Batcher:
    """When to write buffered pages to the store. A store write costs time that grows with the
    stored series (today each write rewrites the series' file), so batches are due after
    ``FLUSH_SECONDS`` or ``FLUSH_ROWS`` bars, but at the earliest ``1 / WRITE_SHARE`` times the
    duration of the previous write after it: writes stay under about ``WRITE_SHARE`` of the run
    and a download of years of minute bars keeps its throughput (``benchmarks/scale.py``). A kill
    loses at most ``max(FLUSH_SECONDS, last write / WRITE_SHARE)`` of fetched pages."""

    def __init__(self, write) -> None:
        self._write = write
        self.pending: list[pd.DataFrame] = []
        self.rows = 0
        self.since = time.monotonic()
        self.last_write_s = 0.0
        self.added = 0

    def add(self, frame: pd.DataFrame) -> None:
        self.pending.append(frame)
        self.rows += len(frame)
        waited = time.monotonic() - self.since
        if (self.rows >= FLUSH_ROWS or waited >= FLUSH_SECONDS) and waited >= self.last_write_s / WRITE_SHARE:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            t = time.monotonic()
            self.added += self._write(pd.concat(self.pending, ignore_index=True))
            self.last_write_s = time.monotonic() - t
        self.pending, self.rows, self.since = [], 0, time.monotonic()


@dataclasses.dataclass(frozen=True)
class SymbolDownload:
    """Outcome for one symbol. Times are bar open times, UTC ms."""

    symbol: str
    requested_from: int  # first bar asked for this run (resume point or since)
    new_bars: int  # timestamps added to the store this run
    rows: int  # stored bars in total
    first: int | None
    last: int | None
    gaps: list[tuple[int, int]]  # (first missing bar, number missing) in the stored series
    warnings: list[str]
    funding: tuple[int, int] | None = None  # (new events, stored events) when funding was downloaded

    def line(self) -> str:
        missing = sum(n for _, n in self.gaps)
        fund = f"; funding +{self.funding[0]} events, {self.funding[1]} stored" if self.funding else ""
        return (f"{self.symbol}: +{self.new_bars} bars, {self.rows} stored "
                f"({ms_to_iso(self.first)} .. {ms_to_iso(self.last)} UTC), "
                f"{len(self.gaps)} gap(s) / {missing} missing bar(s){fund}")


@dataclasses.dataclass(frozen=True)
class DownloadSummary:
    """What :func:`download` did: per-symbol outcomes plus request/retry counts."""

    exchange: str
    timeframe: str
    store_root: Path
    symbols: list[SymbolDownload]
    stats: dict[str, int]  # "requests" and retried faults by ccxt error class / "BadPage"

    @property
    def new_bars(self) -> int:
        return sum(s.new_bars for s in self.symbols)

    def lines(self) -> list[str]:
        retried = {k: v for k, v in self.stats.items() if k != "requests"}
        head = (f"{self.exchange} {self.timeframe} -> {self.store_root}: {self.new_bars} new bars, "
                f"{self.stats.get('requests', 0)} requests"
                + (f", retried {sum(retried.values())} ({', '.join(f'{k} {v}' for k, v in sorted(retried.items()))})"
                   if retried else ""))
        return [head] + ["  " + s.line() for s in self.symbols]


def _parse_symbols(symbols) -> list[str]:
    items = symbols.split(",") if isinstance(symbols, str) else list(symbols)
    out = [s.strip() for s in items if s and s.strip()]
    if not out:
        raise ConfigError("no symbols given: pass e.g. --symbols BTC/USDT,ETH/USDT")
    return list(dict.fromkeys(out))  # unique, order kept


def download(
    exchange_id: str,
    symbols,
    timeframe: str,
    since,
    until=None,
    store=None,
    base_url: str | None = None,
    progress: bool = True,
    *,
    max_retries: int = 8,
    page_limit: int | None = None,
    api_options: dict | None = None,
    source: CcxtSource | None = None,
    funding: bool = False,
) -> DownloadSummary:
    """Download closed candles of ``symbols`` into ``store`` (a CandleStore, a folder, or None for
    the default store) and return a :class:`DownloadSummary`.

    ``since``/``until``: anything :func:`~factorgym.data_layer.timeframes.to_utc_ms` reads
    (``2023-01-01``, epoch ms); bars with ``since <= open time < until`` (None = up to the bar
    still forming, which is never stored). ``source``: a ready :class:`CcxtSource` (tests inject
    one with fast backoff); otherwise one is built from the other arguments. ``funding``: also
    download the funding-rate history of every symbol (all must be perpetual swaps).
    """
    from factorgym.data_layer.sources import ccxt_funding
    from factorgym.data_layer.store import CandleStore
    from factorgym.data_layer.validate import validate_candles

    tf_ms = timeframe_to_ms(timeframe)
    names = _parse_symbols(symbols)
    since_ms, until_ms = to_utc_ms(since), to_utc_ms(until)
    if since_ms is None:
        raise ConfigError("a start time is required: pass --since, e.g. 2023-01-01")
    if until_ms is not None and until_ms <= since_ms:
        raise ConfigError(f"--until {ms_to_iso(until_ms)} is not after --since {ms_to_iso(since_ms)}")
    store = store if isinstance(store, CandleStore) else CandleStore(store)
    if source is None:
        source = CcxtSource(exchange_id, base_url=base_url, api_options=api_options, max_retries=max_retries,
                            page_limit=page_limit, progress=progress,
                            market_types=ccxt_funding.market_types_for(names))
    for sym in names:  # fail fast on every symbol before downloading any
        source.check(sym, timeframe)
        if funding:
            ccxt_funding.check_funding(source, sym)

    results = []
    for sym in names:
        where = f"{exchange_id} {sym} {timeframe}"
        store.write_rules(exchange_id, source.market_rules(sym))
        start = -(-since_ms // tf_ms) * tf_ms
        last = store.last_timestamp(exchange_id, sym, timeframe)
        if last is not None and last + tf_ms > start:
            start = last + tf_ms  # resume after the newest stored (closed) bar
        batch = _Batcher(lambda frame, sym=sym: store.write(exchange_id, sym, timeframe, frame))
        for page in source.iter_pages(sym, timeframe, start, until_ms):
            clean, _ = validate_candles(page, timeframe, name=where, gap_policy="drop", now_ms=source.last_now_ms)
            batch.add(clean)
        batch.flush()
        added = batch.added
        if store.has(exchange_id, sym, timeframe):
            stored = store.read(exchange_id, sym, timeframe)
            _, report = validate_candles(stored, timeframe, name=where, gap_policy="drop",
                                         now_ms=source.last_now_ms)
            res = SymbolDownload(sym, start, added, report.rows, report.first, report.last,
                                 list(report.gaps), list(report.warnings))
        else:
            now = source.last_now_ms
            why = (f"no candles: --since {ms_to_iso(since_ms)} is not before the exchange's current time {ms_to_iso(now)} UTC"
                   if now is not None and since_ms >= now else "no candles in the requested range")
            res = SymbolDownload(sym, start, 0, 0, None, None, [], [why])
        if funding:
            res = dataclasses.replace(res, funding=_download_funding(source, store, exchange_id, sym, since_ms, until_ms))
        log.debug("%s", res.line())
        results.append(res)
    return DownloadSummary(exchange_id, timeframe, store.root, results,
                           {k: int(v) for k, v in source.stats.items()})


def _download_funding(source: CcxtSource, store, exchange_id: str, symbol: str, since_ms: int,
                      until_ms: int | None) -> tuple[int, int]:
    """Funding events of ``symbol`` from after the newest stored one (or ``since_ms``) into the
    store, batched like the candles. Returns (new events, stored events)."""
    from factorgym.data_layer import funding as fstore
    from factorgym.data_layer.sources.ccxt_funding import iter_funding

    last = fstore.last_funding_time(store, exchange_id, symbol)
    start = since_ms if last is None or last < since_ms else last + 1
    batch = _Batcher(lambda frame: fstore.write_funding(store, exchange_id, symbol, frame))
    for page in iter_funding(source, symbol, start, until_ms):
        batch.add(page)
    batch.flush()
    added = batch.added
    stored = len(fstore.read_funding(store, exchange_id, symbol)) if fstore.has_funding(store, exchange_id, symbol) else 0
    return added, stored
