"""A loopback fake of Binance's public spot and USD-M futures REST API, with seeded fault injection.

Serves what ``ccxt.binance`` calls to load markets, read the server time, page through candles and
page through the funding-rate history of perpetual swaps:

* ``GET /api/v3/exchangeInfo`` — spot markets with realistic filters (PRICE_FILTER tickSize,
  LOT_SIZE stepSize/minQty, NOTIONAL minNotional) for :data:`MARKETS`.
* ``GET /api/v3/klines`` — deterministic candles: bar ``t`` of a symbol is a pure function of
  ``(symbol, t)``, so any range is consistent with any other. Binance semantics: the first ``limit``
  (default 500, max 1000) bars with ``startTime <= t <= endTime``, newest ``limit`` when no
  ``startTime``; bars exist from the symbol's listing time up to the bar containing "now", which is
  returned still forming (its close and volume are those of the moment "now").
* ``GET /api/v3/time`` — the controllable "now" (:attr:`FakeExchange.now_ms`); with
  :attr:`FakeExchange.time_step_ms` set, every time request moves "now" on by that much
  afterwards (a clock the test drives through the client: one bar per look).
* revised candles: :meth:`FakeExchange.revise` makes a closed bar's candle come back different after
  it was first served (an exchange correcting a bar after the fact).
* ``GET /fapi/v1/exchangeInfo`` — USD-M perpetuals (:data:`SWAP_MARKETS`, ccxt ``BTC/USDT:USDT``);
  ccxt asks for it when ``options['fetchMarkets']['types']`` holds ``linear``.
* ``GET /fapi/v1/klines`` — perpetual candles, same semantics and rows as the spot ones.
* ``GET /fapi/v1/fundingRate`` — funding events every 8 hours (00:00, 08:00, 16:00 UTC) from the
  listing up to "now"; event ``t`` is a pure function of ``(symbol, t)`` (:func:`funding_row`).
  Binance semantics: the first ``limit`` (default 100, max 1000) events with ``startTime <= t <=
  endTime``, the newest ``limit`` when no ``startTime``.

Faults (seeded RNG, ``fault_rate`` of requests in every bag of 20, kinds taken in turn so every
kind shows up once enough faults are drawn): ``429`` and ``418`` with ``Retry-After``, ``500`` (Binance JSON -1000),
``502``/``503`` (HTML proxy pages), ``504``, ``timeout`` (sleeps past the client timeout),
``truncated`` (a 200 JSON body cut mid-way), ``html`` (a 200 with an HTML body), ``nulls`` (a 200
candle or funding page with one row of nulls; those requests only) and ``disconnect`` (connection dropped
mid-body). Counts per fault kind and per path are kept in :attr:`FakeExchange.fault_counts` and
:attr:`FakeExchange.path_counts`.

Signed spot-account endpoints (orders, balance, my trades; :mod:`tests.fake_account`) answer once
:meth:`FakeExchange.open_account` has created the account; faults on order placement come *after*
the order was booked (the dangerous case), except 429/418, which refuse it.

Use as a context manager in tests (``with FakeExchange() as fx: fx.url``) or as a process:
``python tests/fake_exchange.py --port 0 --fault-rate 0.2 --delay 0.05`` prints its URL.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import random
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

HOUR_MS = 3_600_000
INTERVALS_MS = {
    "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
    "1h": HOUR_MS, "2h": 2 * HOUR_MS, "4h": 4 * HOUR_MS, "6h": 6 * HOUR_MS, "8h": 8 * HOUR_MS,
    "12h": 12 * HOUR_MS, "1d": 24 * HOUR_MS, "3d": 72 * HOUR_MS, "1w": 168 * HOUR_MS,
}  # 1s and 1M are left out on purpose: requests for them get Binance's "Invalid interval." error
DEFAULT_NOW_MS = 1_683_000_000_000 + 1_800_000  # 2023-05-02 04:30 UTC: 30 minutes into an hour bar
FAULT_BAG = 20  # requests per shuffled bag of fault decisions
FUNDING_INTERVAL_MS = 8 * HOUR_MS
FAULT_KINDS = ("429", "418", "500", "502", "503", "504", "timeout", "truncated", "html", "nulls", "disconnect")


@dataclass(frozen=True)
class FakeMarket:
    """One spot market: Binance id, assets, filters (as strings, like Binance) and listing time."""

    symbol_id: str
    base: str
    quote: str
    tick_size: str
    step_size: str
    min_qty: str
    min_notional: str
    base_price: float
    listed_ms: int = 1_500_000_000_000  # 2017-07-14


MARKETS = {
    "BTC/USDT": FakeMarket("BTCUSDT", "BTC", "USDT", "0.01000000", "0.00001000", "0.00001000", "5.00000000", 25_000.0),
    "ETH/USDT": FakeMarket("ETHUSDT", "ETH", "USDT", "0.01000000", "0.00010000", "0.00010000", "5.00000000", 1_800.0),
    "SOL/USDT": FakeMarket("SOLUSDT", "SOL", "USDT", "0.01000000", "0.00100000", "0.00100000", "5.00000000", 22.0),
    "ETH/BTC": FakeMarket("ETHBTC", "ETH", "BTC", "0.00001000", "0.00010000", "0.00010000", "0.00010000", 0.07),
    # listed later than the others, to test downloads that start before a listing
    "NEW/USDT": FakeMarket("NEWUSDT", "NEW", "USDT", "0.00010000", "0.10000000", "0.10000000", "1.00000000", 3.0,
                           listed_ms=1_680_000_000_000),
}


# USD-M perpetuals: the same price paths as the spot markets of the same Binance id
SWAP_MARKETS = {
    "BTC/USDT:USDT": MARKETS["BTC/USDT"],
    "ETH/USDT:USDT": MARKETS["ETH/USDT"],
    "NEW/USDT:USDT": MARKETS["NEW/USDT"],
}
_PRIVATE = ("/api/v3/order", "/api/v3/openOrders", "/api/v3/allOrders", "/api/v3/myTrades", "/api/v3/account")
_PAGED = ("/klines", "/fundingRate")  # paths whose pages can carry a row of nulls, and forced faults


def funding_rate(market: FakeMarket, t: int) -> float:
    """Deterministic funding rate of the event at ``t``: mostly around +0.01%, sometimes negative."""
    phase = (zlib.crc32(market.symbol_id.encode()) % 997) / 997.0 * 2 * math.pi
    x = t / FUNDING_INTERVAL_MS
    return round(1e-4 + 3e-4 * math.sin(x / 5.0 + phase) + 1e-4 * math.sin(x * 1.7), 8)


def funding_row(market: FakeMarket, t: int) -> dict:
    """Binance's funding-history row of the event at ``t`` (decimal strings, like Binance)."""
    return {"symbol": market.symbol_id, "fundingTime": t, "fundingRate": f"{funding_rate(market, t):.8f}",
            "markPrice": f"{_price(market, t / HOUR_MS):.8f}"}


def _decimals(step: str) -> int:
    return len(step.rstrip("0").split(".")[1]) if "." in step.rstrip("0") else 0


def _price(market: FakeMarket, x: float) -> float:
    """Smooth deterministic price path at fractional bar position ``x`` (hours since epoch-ish)."""
    phase = (zlib.crc32(market.symbol_id.encode()) % 1000) / 1000.0 * 2 * math.pi
    return market.base_price * (
        1.0 + 0.20 * math.sin(x / 900.0 + phase) + 0.03 * math.sin(x / 37.0 + 2 * phase) + 0.01 * math.sin(x / 3.1)
    )


def kline_row(market: FakeMarket, ts: int, interval_ms: int, now_ms: int | None = None) -> list:
    """Binance kline row for the bar opening at ``ts``; forming (cut at ``now_ms``) when it has not closed."""
    frac = 1.0 if now_ms is None or now_ms >= ts + interval_ms else max(0.0, (now_ms - ts) / interval_ms)
    x0 = ts / HOUR_MS
    x1 = (ts + frac * interval_ms) / HOUR_MS
    o, c = _price(market, x0), _price(market, x1)
    mids = [_price(market, x0 + (x1 - x0) * k / 4) for k in (1, 2, 3)]
    wiggle = 0.002 * (1 + math.sin(ts / 7_777_777.0))
    h = max(o, c, *mids) * (1 + wiggle)
    low = min(o, c, *mids) * (1 - wiggle)
    vol = frac * (100.0 + 50.0 * math.sin(ts / 11_111_111.0)) * (25_000.0 / market.base_price) ** 0.5
    pd_, qd = _decimals(market.tick_size), _decimals(market.step_size)
    f = lambda v, d: f"{v:.{d}f}"  # noqa: E731 - Binance sends decimal strings
    return [ts, f(o, pd_), f(h, pd_), f(low, pd_), f(c, pd_), f(vol, qd), ts + interval_ms - 1,
            f(vol * c, 8), int(1000 * frac) + 1, f(vol / 2, qd), f(vol * c / 2, 8), "0"]


def _exchange_info(now_ms: int) -> dict:
    symbols = []
    for m in MARKETS.values():
        symbols.append({
            "symbol": m.symbol_id, "status": "TRADING", "baseAsset": m.base, "baseAssetPrecision": 8,
            "quoteAsset": m.quote, "quotePrecision": 8, "quoteAssetPrecision": 8, "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8, "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT"],
            "icebergAllowed": True, "ocoAllowed": True, "quoteOrderQtyMarketAllowed": True,
            "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": m.tick_size, "maxPrice": "1000000.00000000", "tickSize": m.tick_size},
                {"filterType": "LOT_SIZE", "minQty": m.min_qty, "maxQty": "9000.00000000", "stepSize": m.step_size},
                {"filterType": "NOTIONAL", "minNotional": m.min_notional, "applyMinToMarket": True,
                 "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
                {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            ],
            "permissions": [], "permissionSets": [["SPOT"]], "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        })
    return {"timezone": "UTC", "serverTime": now_ms, "rateLimits": [], "exchangeFilters": [], "symbols": symbols}


def _futures_info(now_ms: int) -> dict:
    symbols = []
    for m in SWAP_MARKETS.values():
        symbols.append({
            "symbol": m.symbol_id, "pair": m.symbol_id, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
            "onboardDate": m.listed_ms, "status": "TRADING", "maintMarginPercent": "2.5000",
            "requiredMarginPercent": "5.0000", "baseAsset": m.base, "quoteAsset": m.quote, "marginAsset": m.quote,
            "pricePrecision": _decimals(m.tick_size), "quantityPrecision": _decimals(m.step_size),
            "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN", "underlyingSubType": [],
            "triggerProtect": "0.0500", "liquidationFee": "0.012500", "marketTakeBound": "0.05",
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": m.tick_size, "maxPrice": "1000000", "tickSize": m.tick_size},
                {"filterType": "LOT_SIZE", "minQty": m.min_qty, "maxQty": "1000", "stepSize": m.step_size},
                {"filterType": "MARKET_LOT_SIZE", "minQty": m.min_qty, "maxQty": "120", "stepSize": m.step_size},
                {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                {"filterType": "MIN_NOTIONAL", "notional": "100"},
            ],
            "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET"], "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
        })
    return {"timezone": "UTC", "serverTime": now_ms, "rateLimits": [], "exchangeFilters": [], "assets": [],
            "symbols": symbols}


class FakeExchange:
    """The fake server and its knobs. ``now_ms``, ``fault_rate``, ``delay`` and ``gaps`` may be changed
    while it runs; ``gaps`` maps a unified symbol to ``[(start_ms, end_ms), ...]`` bars missing on the
    exchange (downtime), which downloads must report and never fill."""

    def __init__(self, *, fault_rate: float = 0.2, seed: int = 0, now_ms: int = DEFAULT_NOW_MS,
                 delay: float = 0.0, timeout_sleep: float = 1.0, retry_after: int = 1,
                 fault_kinds: tuple[str, ...] = FAULT_KINDS, max_limit: int = 1000,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        unknown = set(fault_kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
        self.fault_rate, self.now_ms, self.delay = fault_rate, now_ms, delay
        self.timeout_sleep, self.retry_after, self.max_limit = timeout_sleep, retry_after, max_limit
        self.fault_kinds = tuple(fault_kinds)
        self.gaps: dict[str, list[tuple[int, int]]] = {}
        self.delisted: set[str] = set()  # unified symbols whose candle requests are refused ("Invalid symbol")
        self.time_step_ms = 0  # "now" moves on by this after each answered time request
        self.revisions: dict[tuple[str, int], list] = {}  # (symbol id, ts) -> [times served closed, factor]
        self._rng = random.Random(seed)
        self._turn = 0
        self._lock = threading.Lock()
        self.fault_counts: collections.Counter = collections.Counter()
        self.path_counts: collections.Counter = collections.Counter()
        self.requests: list[tuple[str, dict, str | None]] = []  # (path, query, fault kind or None)
        self.arrivals: list[tuple[str, float]] = []  # (path, time.monotonic()) of every request
        self._forced: list[str] = []
        self._bag: list[bool] = []
        self._bag_rate = fault_rate
        self.account = None  # the signed spot account (open_account)
        self._server = _Server((host, port), _make_handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeExchange":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-exchange", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FakeExchange":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def open_account(self, *, api_key: str, secret: str, balances: dict[str, float] | None = None):
        """Serve a signed spot account (:class:`tests.fake_account.FakeAccount`) with these keys."""
        from tests.fake_account import FakeAccount
        self.account = FakeAccount(self, api_key=api_key, secret=secret, balances=balances)
        return self.account

    def revise(self, symbol: str, ts: int, *, factor: float = 1.01) -> None:
        """Serve bar ``ts`` of ``symbol`` as it is the first time it is asked for closed, and from then on
        with its high, low and close multiplied by ``factor`` and its volume doubled (a correction)."""
        self.revisions[(MARKETS[symbol].symbol_id, int(ts))] = [0, float(factor)]

    def _revised(self, market: FakeMarket, row: list, interval_ms: int) -> list:
        rev = self.revisions.get((market.symbol_id, int(row[0])))
        if rev is None or self.now_ms < int(row[0]) + interval_ms:  # (a forming bar is not a revision)
            return row
        rev[0] += 1
        if rev[0] == 1:
            return row
        d, qd = _decimals(market.tick_size), _decimals(market.step_size)
        out = list(row)
        for k in (2, 3, 4):
            out[k] = f"{float(row[k]) * rev[1]:.{d}f}"
        out[5] = f"{float(row[5]) * 2:.{qd}f}"
        return out

    def reset_counts(self) -> None:
        with self._lock:
            self.fault_counts.clear()
            self.path_counts.clear()
            self.requests.clear()
            self.arrivals.clear()

    def force_faults(self, kinds: list[str]) -> None:
        """Answer the next ``len(kinds)`` candle or funding requests with these faults, in order."""
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}")
        with self._lock:
            self._forced.extend(kinds)

    def klines_requests(self) -> list[dict]:
        """Query dicts of the candle requests answered without a fault."""
        with self._lock:
            return [q for p, q, f in self.requests if p.endswith("/klines") and f is None]

    # -- decisions, under the lock so concurrent requests draw from one seeded sequence --
    def _draw_fault(self, path: str, query: dict, can_fail: bool = True) -> str | None:
        with self._lock:
            self.path_counts[path] += 1
            kind = None
            if not can_fail:  # an error answer (bad symbol...) is never replaced by a fault
                pass
            elif self._forced and path.endswith(_PAGED):
                kind = self._forced.pop(0)
                self.fault_counts[kind] += 1
            elif self.fault_rate > 0 and self._next_is_fault():
                allowed = [k for k in self.fault_kinds if k != "nulls" or path.endswith(_PAGED)]
                if allowed:
                    kind = allowed[self._turn % len(allowed)]
                    self._turn += 1
                    self.fault_counts[kind] += 1
            self.requests.append((path, query, kind))
            return kind

    def _next_is_fault(self) -> bool:
        """Faults drawn from shuffled bags of :data:`FAULT_BAG` requests holding ``round(rate * FAULT_BAG)``
        faults each: seeded and random in position, but the rate holds over every bag, so a short test
        run still sees its share of faults (plain Bernoulli draws can give half as many)."""
        if not self._bag or self._bag_rate != self.fault_rate:
            n = round(min(1.0, self.fault_rate) * FAULT_BAG)
            self._bag = [True] * n + [False] * (FAULT_BAG - n)
            self._rng.shuffle(self._bag)
            self._bag_rate = self.fault_rate
        return self._bag.pop()

    def funding_requests(self) -> list[dict]:
        """Query dicts of the funding-history requests answered without a fault."""
        with self._lock:
            return [q for p, q, f in self.requests if p.endswith("/fundingRate") and f is None]

    def funding(self, query: dict) -> tuple[int, object]:
        """(HTTP status, JSON body) of a funding-history request, with Binance's semantics."""
        found = [(s, m) for s, m in SWAP_MARKETS.items() if m.symbol_id == query.get("symbol")]
        if not found:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        unified, market = found[0]
        try:
            limit = min(int(query.get("limit", 100)), 1000, self.max_limit)
            start = int(query["startTime"]) if "startTime" in query else None
            end = int(query["endTime"]) if "endTime" in query else None
        except ValueError:
            return 400, {"code": -1100, "msg": "Illegal characters found in a parameter."}
        step = FUNDING_INTERVAL_MS
        hi = self.now_ms if end is None else min(self.now_ms, end)
        hi = (hi // step) * step  # the newest settled event
        first = -(-market.listed_ms // step) * step
        gaps = self.gaps.get(unified, [])
        times: list[int] = []
        t = max(first, -(-start // step) * step) if start is not None else None
        if t is not None:
            while t <= hi and len(times) < limit:
                if not any(a <= t < b for a, b in gaps):
                    times.append(t)
                t += step
        else:
            t = hi
            while t >= first and len(times) < limit:
                if not any(a <= t < b for a, b in gaps):
                    times.append(t)
                t -= step
            times.reverse()
        return 200, [funding_row(market, t) for t in times]

    def klines(self, query: dict, markets: dict | None = None) -> tuple[int, object]:
        """(HTTP status, JSON body) of a klines request, with Binance's semantics and errors."""
        markets = MARKETS if markets is None else markets
        symbol_id = query.get("symbol")
        market = next((m for m in markets.values() if m.symbol_id == symbol_id), None)
        if market is None or any(markets.get(s) is market for s in self.delisted):
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        interval_ms = INTERVALS_MS.get(query.get("interval", ""))
        if interval_ms is None:
            return 400, {"code": -1120, "msg": "Invalid interval."}
        try:
            limit = min(int(query.get("limit", 500)), 1000, self.max_limit)
            start = int(query["startTime"]) if "startTime" in query else None
            end = int(query["endTime"]) if "endTime" in query else None
        except ValueError:
            return 400, {"code": -1100, "msg": "Illegal characters found in a parameter."}
        now = self.now_ms
        last_open = (now // interval_ms) * interval_ms  # the forming bar
        hi = last_open if end is None else min(last_open, (end // interval_ms) * interval_ms)
        first_listed = -(-market.listed_ms // interval_ms) * interval_ms
        gaps = [(a, b) for a, b in self.gaps.get(next(s for s, m in markets.items() if m is market), [])]

        def exists(t: int) -> bool:
            return not any(a <= t < b for a, b in gaps)

        rows: list[list] = []
        if start is not None:
            t = max(first_listed, -(-start // interval_ms) * interval_ms)
            while t <= hi and len(rows) < limit:
                if exists(t):
                    rows.append(self._revised(market, kline_row(market, t, interval_ms, now), interval_ms))
                t += interval_ms
        else:
            t = hi
            while t >= first_listed and len(rows) < limit:
                if exists(t):
                    rows.append(self._revised(market, kline_row(market, t, interval_ms, now), interval_ms))
                t -= interval_ms
            rows.reverse()
        return 200, rows


class _Server(ThreadingHTTPServer):
    """Quiet about clients that went away mid-request (a killed or timed-out client is a test's point)."""

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def _make_handler(fx: FakeExchange):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like the real API behind its CDN

        def log_message(self, *args) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes, ctype: str = "application/json;charset=UTF-8",
                  headers: dict | None = None, length: int | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _private(self, method: str) -> None:
            """A signed account request: faults other than 429/418 come after the request was served."""
            parsed = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            with fx._lock:
                fx.arrivals.append((parsed.path, time.monotonic()))
            if fx.delay:
                time.sleep(fx.delay)
            fault = fx._draw_fault(parsed.path, {"method": method}, can_fail=True)
            if fault in ("429", "418") or fx.account is None:
                status, payload = (404, None) if fx.account is None else (200, {})
            else:
                status, payload, _ = fx.account.handle(method, parsed.path, parsed.query, body, self.headers)
                if status != 200 and fault is not None:
                    fault = None  # an error answer is never replaced by a fault (the order was not booked)
            try:
                self._answer(status, payload, fault)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def do_POST(self) -> None:  # noqa: N802
            self._private("POST")

        def do_DELETE(self) -> None:  # noqa: N802
            self._private("DELETE")

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            parsed = urlparse(self.path)
            if parsed.path in _PRIVATE:
                self._private("GET")
                return
            query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
            path = parsed.path
            with fx._lock:
                fx.arrivals.append((path, time.monotonic()))
            if fx.delay:
                time.sleep(fx.delay)
            if path == "/api/v3/time":
                status, payload = 200, {"serverTime": fx.now_ms}
            elif path == "/api/v3/exchangeInfo":
                status, payload = 200, _exchange_info(fx.now_ms)
            elif path == "/api/v3/klines":
                status, payload = fx.klines(query)
            elif path == "/fapi/v1/exchangeInfo":
                status, payload = 200, _futures_info(fx.now_ms)
            elif path == "/fapi/v1/klines":
                status, payload = fx.klines(query, SWAP_MARKETS)
            elif path == "/fapi/v1/fundingRate":
                status, payload = fx.funding(query)
            else:
                status, payload = 404, None
            fault = fx._draw_fault(path, query, can_fail=status == 200)
            if path == "/api/v3/time" and fx.time_step_ms:
                with fx._lock:
                    fx.now_ms += fx.time_step_ms
            try:
                self._answer(status, payload, fault)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout fault)

        def _answer(self, status: int, payload, fault: str | None) -> None:
            retry = {"Retry-After": str(fx.retry_after)}
            html = b"<html><head><title>%s</title></head><body><center><h1>%s</h1></center><hr><center>nginx</center></body></html>"
            if status == 404 or payload is None:
                self._send(404, b"<html><body>404 Not Found</body></html>", "text/html")
            elif fault is None:
                self._send(status, json.dumps(payload, separators=(",", ":")).encode())
            elif fault == "429":
                self._send(429, b'{"code":-1003,"msg":"Too many requests; current limit is 6000 request weight per 1 MINUTE."}',
                           headers=retry)
            elif fault == "418":
                self._send(418, b'{"code":-1003,"msg":"Way too many requests; IP banned until 1683000000000."}',
                           headers=retry)
            elif fault == "500":
                self._send(500, b'{"code":-1000,"msg":"An unknown error occured while processing the request."}')
            elif fault in ("502", "503"):
                name = b"502 Bad Gateway" if fault == "502" else b"503 Service Temporarily Unavailable"
                self._send(int(fault), html % (name, name), "text/html")
            elif fault == "504":
                self._send(504, html % (b"504 Gateway Time-out", b"504 Gateway Time-out"), "text/html")
            elif fault == "timeout":
                time.sleep(fx.timeout_sleep)
                self._send(status, json.dumps(payload).encode())
            elif fault == "truncated":
                body = json.dumps(payload, separators=(",", ":")).encode()
                self._send(200, body[: max(1, len(body) // 2)])
            elif fault == "html":
                self._send(200, b"<!DOCTYPE html><html><body><h1>Service maintenance</h1>"
                                b"<p>Please try again later.</p></body></html>", "text/html; charset=utf-8")
            elif fault == "nulls":
                rows = list(payload) if isinstance(payload, list) else []
                if rows:
                    null = dict.fromkeys(rows[0]) if isinstance(rows[0], dict) else [None] * 12
                    rows[len(rows) // 2] = null
                self._send(200, json.dumps(rows).encode())
            elif fault == "disconnect":
                body = json.dumps(payload).encode()
                self._send(200, body[: len(body) // 3], length=len(body))
                self.close_connection = True
            else:  # pragma: no cover - guarded in __init__
                raise AssertionError(fault)

    return Handler


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Loopback fake Binance spot and USD-M futures API with fault injection.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (keep it loopback)")
    p.add_argument("--port", type=int, default=0, help="port (0 = pick a free one)")
    p.add_argument("--fault-rate", type=float, default=0.2, help="fraction of requests answered with a fault")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault RNG")
    p.add_argument("--delay", type=float, default=0.0, help="seconds to wait before answering each request")
    p.add_argument("--now", type=int, default=DEFAULT_NOW_MS, help="the exchange's 'now', UTC ms")
    p.add_argument("--timeout-sleep", type=float, default=1.0, help="seconds a 'timeout' fault stalls")
    args = p.parse_args(argv)
    fx = FakeExchange(fault_rate=args.fault_rate, seed=args.seed, now_ms=args.now, delay=args.delay,
                      timeout_sleep=args.timeout_sleep, host=args.host, port=args.port)
    print(fx.url, flush=True)
    try:
        fx._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        fx._server.server_close()
        print(json.dumps({"faults": dict(fx.fault_counts), "paths": dict(fx.path_counts)}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
