"""Candles and market rules from any ccxt exchange, fetched page by page, checked page by page.

What :class:`CcxtSource` guarantees about what it returns:

* **Closed bars only.** The bar still forming is cut off using the exchange's clock
  (``fetch_time`` when ``has['fetchTime']``, else the local clock less :data:`LOCAL_CLOCK_MARGIN_MS`).
* **Every page checked** before it is used: a body that is not JSON (an HTML error page, a body cut
  mid-way: ccxt then hands back a string and parses it into nothing), a row with a missing or
  non-numeric field (ccxt turns those into ``None`` and silently filters them), a non-finite value,
  a time off the timeframe grid, a duplicated time, a row before the requested start, or more rows
  than asked for. A bad page counts as a transient fault: it is fetched again, a bounded number of
  times, then the download fails naming exchange, symbol and page start.
* **Retries only what is worth retrying.** ``ccxt.OperationFailed`` (``NetworkError`` and its kin:
  ``DDoSProtection``, ``RateLimitExceeded``, ``RequestTimeout``, ``ExchangeNotAvailable``; plus
  ``BadResponse``) are retried with capped exponential backoff and jitter, honouring a
  ``Retry-After`` header; ``ccxt.ExchangeError`` (bad symbol, bad request, auth...) fails at once
  with one line. The exchange's own rate limiter (``enableRateLimit``) is always on.

``base_url`` is the testing hook: every host in ``exchange.urls['api']`` is replaced by it, so a
real ccxt exchange class talks to a loopback fake. For Binance, markets are loaded from spot only
(``options['fetchMarkets'] = {'types': ['spot']}``; ``market_types`` adds ``linear``/``inverse``
for perpetuals such as ``BTC/USDT:USDT``) and currencies and margin pairs are not fetched
(signed calls once keys are set; candles need neither), unless ``api_options['options']`` says otherwise.

Funding rates of swap markets: ``sources/ccxt_funding.py``, through this class's retries.
"""

from __future__ import annotations

import collections
import dataclasses
import difflib
import logging
import random
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from factorgym.data_layer.candles import candles_from_rows, empty_candles
from factorgym.data_layer.sources.base import MarketRules
from factorgym.data_layer.timeframes import grid_phase, ms_to_iso, timeframe_to_ms
from factorgym.errors import ConfigError, FactorgymError, MissingExtraError

log = logging.getLogger(__name__)

LOCAL_CLOCK_MARGIN_MS = 5_000  # without the exchange's clock, wait this long past a close
_DEFAULT_PAGE_LIMIT = 500  # when ccxt does not state the exchange's maximum
_SECRET_KEYS = ("apiKey", "secret", "password", "uid", "privateKey", "token")


class DownloadError(FactorgymError):
    """A download stopped: the exchange refused the request, or retries ran out."""


class BadPage(Exception):
    """A page came back malformed; treated like a network fault (retried, bounded)."""


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with "equal jitter": attempt ``k`` (0-based) waits
    ``d/2 + U(0, d/2)`` seconds with ``d = min(cap, base * 2**k)``; a ``Retry-After`` header raises
    the wait to at least that many seconds, still at most ``cap``. ``max_retries`` retries per call."""

    max_retries: int = 8
    backoff_base: float = 0.5
    backoff_cap: float = 30.0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.backoff_base < 0 or self.backoff_cap < 0:
            raise ConfigError(f"retry settings must be >= 0, got {self}")

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        d = min(self.backoff_cap, self.backoff_base * 2.0 ** min(attempt, 60))
        wait = d / 2 + rng.uniform(0, d / 2)
        if retry_after is not None and retry_after > 0:
            wait = max(wait, retry_after)
        return min(wait, self.backoff_cap)


def _swap_hosts(urls, base_url: str):
    """``urls['api']`` with scheme and host of every URL replaced by ``base_url`` (paths kept)."""
    if isinstance(urls, dict):
        return {k: _swap_hosts(v, base_url) for k, v in urls.items()}
    if isinstance(urls, str):
        parts = urlsplit(urls)
        return base_url.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")
    return urls


def _step(value, mode: int, ccxt) -> float:
    """A ccxt precision value as a step size (0 = unknown / no rounding)."""
    if value is None:
        return 0.0
    if mode == ccxt.TICK_SIZE:
        return float(value)
    if mode == ccxt.DECIMAL_PLACES:
        return 10.0 ** -float(value)
    return 0.0  # SIGNIFICANT_DIGITS has no fixed step


class CcxtSource:
    """:class:`~factorgym.data_layer.sources.base.OHLCVSource` over a real ccxt exchange class.

    Args:
        exchange_id: ccxt id (``binance``, ``kraken``...).
        base_url: send every API call here instead (testing hook, e.g. a loopback fake exchange).
        api_options: extra ccxt constructor config (``timeout`` ms, ``options``, keys from the
            environment for private calls; public candles need none). Never logged.
        max_retries, backoff_base, backoff_cap: see :class:`RetryPolicy` (seconds).
        page_limit: candles per request (default: the exchange's maximum from ``exchange.features``).
        progress: show the bars fetched / expected (a tqdm bar on a terminal, log lines elsewhere;
            see :mod:`factorgym.progress`).
        sleep: called with each backoff delay in seconds (inject a recorder in tests).
        seed: seed of the jitter RNG.
        markets: saved ``load_markets`` output; skips the markets request.
        market_types: Binance only: market kinds to load (default ``("spot",)``; add ``"linear"``
            / ``"inverse"`` for USD-M / coin-M perpetuals); see ``ccxt_funding.market_types_for``.
    """

    def __init__(
        self,
        exchange_id: str,
        *,
        base_url: str | None = None,
        api_options: dict | None = None,
        max_retries: int = 8,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        page_limit: int | None = None,
        progress: bool = True,
        sleep: Callable[[float], None] = time.sleep,
        seed: int | None = None,
        markets: dict | None = None,
        market_types: tuple[str, ...] = ("spot",),
    ) -> None:
        try:
            import ccxt
        except ImportError as exc:  # pragma: no cover - ccxt is a core dependency
            raise MissingExtraError("ccxt", "all", "exchange downloads") from exc
        self._ccxt = ccxt
        cls = getattr(ccxt, str(exchange_id), None)
        if exchange_id not in ccxt.exchanges or cls is None:
            close = difflib.get_close_matches(str(exchange_id), ccxt.exchanges, n=3)
            raise ConfigError(f"exchange {exchange_id!r} is not a ccxt exchange id"
                              + (f"; did you mean {', '.join(close)}?" if close else "; see ccxt.exchanges"))
        config = dict(api_options or {})
        self._secrets = [str(config[k]) for k in _SECRET_KEYS if config.get(k)]
        config["enableRateLimit"] = True  # the exchange's limit is part of being a good client
        self.exchange = cls(config)
        if exchange_id == "binance":  # spot markets only; no private currencies call when keys are set
            user = config.get("options", {})
            if "fetchMarkets" not in user:
                self.exchange.options["fetchMarkets"] = {"types": list(market_types)}
            for key in ("fetchCurrencies", "fetchMargins"):  # signed sapi calls once keys are set
                if key not in user:
                    self.exchange.options[key] = False
        if base_url:
            self.exchange.urls["api"] = _swap_hosts(self.exchange.urls["api"], base_url)
        if markets is not None:
            self.exchange.set_markets(markets)
        self.name = exchange_id
        self.retry = RetryPolicy(max_retries, backoff_base, backoff_cap)
        feature_limit = None
        try:
            feature_limit = self.exchange.features["spot"]["fetchOHLCV"]["limit"]
        except (KeyError, TypeError):
            pass
        self.page_limit = int(page_limit or feature_limit or _DEFAULT_PAGE_LIMIT)
        if self.page_limit < 1:
            raise ConfigError(f"page_limit must be >= 1, got {page_limit}")
        self.progress = progress
        self._sleep = sleep
        self._rng = random.Random(seed)
        self.stats: collections.Counter = collections.Counter()  # requests, retries by error kind
        self.delays: list[float] = []  # every backoff wait, seconds
        self.last_now_ms: int | None = None
        self._page_log: dict | None = None
        self._hook_parsers()

    # ------------------------------------------------------------------ ccxt hooks
    def _hook_parsers(self) -> None:
        """Watch ccxt's row parser so rows it would silently drop (None fields, rows before
        ``since``) and non-JSON bodies are seen before ccxt filters them away."""
        ex = self.exchange
        parse_many, parse_one = ex.parse_ohlcvs, ex.parse_ohlcv

        def parse_ohlcvs(ohlcvs, *args, **kwargs):
            if self._page_log is not None:
                self._page_log["container"] = type(ohlcvs).__name__
                self._page_log["ok_container"] = isinstance(ohlcvs, (list, tuple)) or ohlcvs is None
            return parse_many(ohlcvs, *args, **kwargs)

        def parse_ohlcv(ohlcv, *args, **kwargs):
            row = parse_one(ohlcv, *args, **kwargs)
            if self._page_log is not None:
                self._page_log["rows"].append(row)
            return row

        ex.parse_ohlcvs, ex.parse_ohlcv = parse_ohlcvs, parse_ohlcv

    def _redact(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "***")
        return " ".join(text.split())[:300]

    def _retry_after(self) -> float | None:
        headers = getattr(self.exchange, "last_response_headers", None) or {}
        try:
            return float(headers.get("Retry-After"))
        except (TypeError, ValueError):
            return None

    def _call(self, fn: Callable, where: str):
        """``fn()`` with retries on transient faults; ExchangeError fails at once."""
        ccxt = self._ccxt
        for attempt in range(self.retry.max_retries + 1):
            self.exchange.last_response_headers = None
            self.stats["requests"] += 1
            try:
                return fn()
            except ccxt.ExchangeError as exc:
                raise DownloadError(f"{self.name} {where}: the exchange refused the request "
                                    f"({type(exc).__name__}: {self._redact(str(exc))}); not retried") from None
            except (ccxt.OperationFailed, BadPage) as exc:
                self.stats[type(exc).__name__] += 1
                last = exc
                if attempt == self.retry.max_retries:
                    break
                delay = self.retry.delay(attempt, self._rng, self._retry_after())
                self.delays.append(delay)
                log.info("%s %s: %s (%s); retry %d/%d in %.2fs", self.name, where, type(exc).__name__,
                         self._redact(str(exc))[:120], attempt + 1, self.retry.max_retries, delay)
                self._sleep(delay)
            except ccxt.BaseError as exc:
                raise DownloadError(f"{self.name} {where}: {type(exc).__name__}: {self._redact(str(exc))}") from None
        raise DownloadError(f"{self.name} {where}: gave up after {self.retry.max_retries + 1} attempts; last "
                            f"error {type(last).__name__}: {self._redact(str(last))}")

    # ------------------------------------------------------------------ markets, time
    def load_markets(self) -> dict:
        """Markets, loaded once (retried; an empty market list counts as a bad response)."""
        if self.exchange.markets:
            return self.exchange.markets

        def load():
            markets = self.exchange.load_markets(reload=True)
            if not markets:
                raise BadPage("empty market list (garbled exchange info?)")
            return markets

        return self._call(load, "load_markets")

    def symbols(self) -> list[str]:
        return sorted(self.load_markets())

    def check(self, symbol: str, timeframe: str) -> None:
        """Fail fast, before any candle request, on what the exchange cannot serve."""
        ex = self.exchange
        if not ex.has.get("fetchOHLCV"):
            raise ConfigError(f"{self.name} does not offer candles (has['fetchOHLCV'] is false)")
        timeframe_to_ms(timeframe)
        if ex.timeframes and timeframe not in ex.timeframes:
            raise ConfigError(f"{self.name} has no timeframe {timeframe!r}; it offers {', '.join(ex.timeframes)}")
        markets = self.load_markets()
        if symbol not in markets:
            close = difflib.get_close_matches(symbol, list(markets), n=3)
            raise ConfigError(f"{self.name} has no market {symbol!r}"
                              + (f"; did you mean {', '.join(close)}?" if close else "; use ccxt's unified form, e.g. BTC/USDT"))

    def server_now(self) -> int:
        """The exchange's clock in UTC ms (local clock less a margin when it has none)."""
        if not self.exchange.has.get("fetchTime"):
            return int(time.time() * 1000) - LOCAL_CLOCK_MARGIN_MS

        def fetch_time():
            now = self.exchange.fetch_time()
            if not isinstance(now, int) or now < 1_000_000_000_000:
                raise BadPage(f"server time {now!r} is not epoch milliseconds")
            return now

        return self._call(fetch_time, "fetch_time")

    def market_rules(self, symbol: str) -> MarketRules:
        """Lot step, price step, minimum amount, minimum notional and fees of ``symbol``."""
        self.load_markets()
        if symbol not in self.exchange.markets:
            raise ConfigError(f"{self.name} has no market {symbol!r}")
        m = self.exchange.markets[symbol]
        mode, ccxt = self.exchange.precisionMode, self._ccxt
        prec, limits = m.get("precision") or {}, m.get("limits") or {}
        trading = (self.exchange.fees or {}).get("trading", {})
        maker = m.get("maker") if m.get("maker") is not None else trading.get("maker", 0.001)
        taker = m.get("taker") if m.get("taker") is not None else trading.get("taker", 0.001)
        return MarketRules(
            symbol=symbol,
            amount_step=_step(prec.get("amount"), mode, ccxt),
            price_step=_step(prec.get("price"), mode, ccxt),
            min_amount=float((limits.get("amount") or {}).get("min") or 0.0),
            min_notional=float((limits.get("cost") or {}).get("min") or 0.0),
            maker_fee=float(maker),
            taker_fee=float(taker),
            origin=f"ccxt:{self.name}",
        )

    # ------------------------------------------------------------------ candles
    def _fetch_page(self, symbol: str, timeframe: str, tf_ms: int, start: int, want: int) -> np.ndarray:
        """One validated page as float64 ``[n, 6]`` rows with ``start <= ts``, at most ``want`` of them."""

        def fetch():
            self._page_log = {"rows": [], "ok_container": True, "container": None}
            try:
                rows = self.exchange.fetch_ohlcv(symbol, timeframe, since=start, limit=want)
            except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
                raise BadPage(f"unparseable response ({type(exc).__name__}: {exc})") from exc
            finally:
                seen, self._page_log = self._page_log, None
            return self._check_page(rows, seen, start, want, tf_ms)

        return self._call(fetch, f"{symbol} {timeframe} page from {ms_to_iso(start)} ({start})")

    @staticmethod
    def _as_array(rows, what: str) -> np.ndarray:
        """Rows as float64 [n, 6]; None (ccxt's "missing or not a number") becomes NaN and fails."""
        if len(rows) == 0:
            return np.empty((0, 6))
        try:
            arr = np.array(rows, dtype=np.float64)
            if arr.ndim == 2 and arr.shape[1] > 6:
                arr = arr[:, :6]
        except (TypeError, ValueError) as exc:
            raise BadPage(f"{what}: rows are not numeric ({exc})") from None
        if arr.ndim != 2 or arr.shape[1] != 6:
            raise BadPage(f"{what}: rows do not have 6 fields (shape {arr.shape})")
        bad = ~np.isfinite(arr).all(axis=1)
        if bad.any():
            raise BadPage(f"{what}: row with missing, non-numeric or non-finite fields: {rows[int(np.argmax(bad))]!r}"[:200])
        return arr

    @classmethod
    def _check_page(cls, rows, seen: dict, start: int, want: int, tf_ms: int) -> np.ndarray:
        if not seen["ok_container"]:
            raise BadPage(f"response body is not a JSON list (ccxt got a {seen['container']}: HTML or truncated?)")
        if not isinstance(rows, list):
            raise BadPage(f"fetch_ohlcv returned {type(rows).__name__}, not a list of rows")
        if len(seen["rows"]) > want:
            raise BadPage(f"{len(seen['rows'])} rows for a limit of {want}")
        raw = cls._as_array(seen["rows"], "before ccxt's filtering")  # rows ccxt would silently drop
        if (raw[:, 0] < start).any():
            raise BadPage(f"row at {int(raw[:, 0].min())} is before the requested start {start}")
        arr = cls._as_array(rows, "parsed page")
        ts = arr[:, 0]
        off = (ts - (grid_phase(int(ts[0]), tf_ms) if len(ts) else 0)) % tf_ms != 0  # 1w bars open on Monday
        if off.any():
            raise BadPage(f"row time {int(ts[np.argmax(off)])} is off the {tf_ms} ms grid")
        if (ts < start).any() or (np.diff(ts) <= 0).any():
            raise BadPage("row times out of order, duplicated or before the requested start")
        return arr

    def iter_pages(
        self, symbol: str, timeframe: str, since: int, until: int | None = None
    ) -> Iterator[pd.DataFrame]:
        """Closed candles with ``since <= timestamp < until`` (UTC ms; None = up to the forming bar),
        one validated frame per exchange page, oldest first. Sets :attr:`last_now_ms`."""
        from factorgym.progress import progress_bar

        self.check(symbol, timeframe)
        tf_ms = timeframe_to_ms(timeframe)
        now = self.server_now()
        self.last_now_ms = now
        cutoff = (now // tf_ms) * tf_ms  # open time of the bar still forming: never returned
        stop = cutoff if until is None else min(cutoff, -(-int(until) // tf_ms) * tf_ms)
        page_start = -(-int(since) // tf_ms) * tf_ms
        if page_start >= stop:
            return
        bar = progress_bar(total=(stop - page_start) // tf_ms, unit="bar", desc=f"{self.name} {symbol} {timeframe}",
                           enabled=self.progress)
        try:
            while page_start < stop:
                want = min(self.page_limit, (stop - page_start) // tf_ms)
                rows = self._fetch_page(symbol, timeframe, tf_ms, page_start, want)
                if len(rows) == 0:  # nothing in this window: skip past it (an exchange gap or not listed yet)
                    bar.update(want)
                    page_start += want * tf_ms
                    continue
                keep = rows[rows[:, 0] < stop]
                if len(keep):
                    bar.update((int(keep[-1, 0]) + tf_ms - page_start) // tf_ms)
                    yield candles_from_rows(keep)
                if len(keep) < len(rows):
                    break  # reached the forming bar or ``until``
                page_start = int(rows[-1, 0]) + tf_ms
        finally:
            bar.close()

    def fetch(self, symbol: str, timeframe: str, since: int | None = None, until: int | None = None) -> pd.DataFrame:
        """All closed candles of the range in one frame (see :meth:`iter_pages`)."""
        if since is None:
            raise ConfigError(f"{self.name} {symbol}: a start time is required for exchange downloads (since=...)")
        pages = list(self.iter_pages(symbol, timeframe, since, until))
        return pd.concat(pages, ignore_index=True) if pages else empty_candles()
