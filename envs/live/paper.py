"""``PaperExchange``: a local exchange that fills through the env's own accounting, event-sourced.

Clock. ``now`` is the open time of the bar new market orders fill at (latency 0). The first
:meth:`PaperExchange.advance` call sets it; every later ``advance(ts)`` processes each bar from
``now`` up to (not including) ``ts`` -- bars that have closed by time ``ts`` -- and sets ``now = ts``.
Processing bar f is the env's step: pending orders fill at f's open (slippage, impact from f's volume,
fees, lot step, minimums), untradable positions are frozen or closed, long/short accounts are
checked for liquidation, borrow and funding are charged at f's close and the book is marked there.
So a loop that, at the close of bar t (time ``ts[t+1]``), calls ``advance(ts[t+1])``, reads the
balance and then places its orders, sees exactly the env's state at the close of t, and its orders
fill as the env's action of bar t does.

Orders (ccxt's ``create_order``; type ``"market"``, or ``"limit"`` with an amount and a price):

- ``params={"targetWeight": w}``: the env's own order. Its size is fixed at the fill bar's open from
  the book's value there, by the env's sizing (weight 0 closes exactly; NaN holds) -- the open is
  unknown when the decision is made, so a loop that must equal ``backtest()`` sends weights.
  ``amount`` and ``side`` are the caller's estimate; the order's ``amount`` becomes the filled size.
- otherwise ``amount`` base units (``params={"closePosition": True}``: the whole position, exactly):
  filled after the weight orders, sells first, then buys (long-only: scaled down together when their
  cost exceeds the cash, as the env does), each through ``process_order``; capped at
  ``participation`` x the bar's volume, the rest kept open (``remainder="keep"``) or cancelled.
- ``type="limit"``, ``price``: open (good till cancelled) until a bar trades through the price: a
  buy fills when the bar's low is below it, at the limit, or at the open when the bar opened below
  it (a sell: high above, at the limit or the higher open); through ``process_order`` at that price
  without slippage, after the market orders, with the same participation cap (the rest stays open).

Rejections (an ``order_rejected`` event, then the ccxt-named error): unknown symbol (``BadSymbol``),
a type other than market or limit, a limit order without a positive price, an amount that rounds
to nothing or is below the minimum (``InvalidOrder``), not enough cash or base for an amount order
at the last close (a limit buy: at its price) (``InsufficientFunds``). At the fill: below the minimum notional at the open, or the market not
trading that bar: the order is closed as ``rejected`` with that reason.

Everything is an event of :class:`~factorgym.envs.live.events.EventLog` (``state_dir/events.sqlite``)
written before the book changes; the book (:class:`~factorgym.envs.live.book.Book`) is the
projection of the log, rebuilt on start; :meth:`PaperExchange.state_at` rebuilds any past state.

History. The book holds the open orders and the latest ``keep_history`` done orders and trades; the
rest is in the log, as a real exchange keeps it on its servers. ``fetch_order`` (by id or client
id), ``fetch_orders``, ``fetch_my_trades`` and ``cancel_order`` read what the book no longer holds
from the log (:mod:`~factorgym.envs.live.book_history`): the same answers, slower (a look-up by id
reads a few hundred orders' events; trades or orders from ``since`` read the log from there). A
client id sent again finds its first order however old (never a second order).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from factorgym.data_layer.timeframes import timeframe_to_ms
from factorgym.envs.config import ExecutionConfig
from factorgym.envs.execution import FILLED, IGNORED_NO_CHANGE, ORDER_STATUS, Slippage, market_rules
from factorgym.envs.layouts import CONFIG, PRICE, RULE, price_records
from factorgym.envs.live import paper_kernel as pk
from factorgym.envs.live import book_history
from factorgym.envs.live.book import KEEP_HISTORY, Book, iso
from factorgym.envs.live.candle_feed import candle_from_payload, candle_payload
from factorgym.envs.live.events import EventLog
from factorgym.envs.live.exchange import (
    BadSymbol, ExchangeError, InsufficientFunds, InvalidOrder, NotSupported, OrderNotFound, reason_of,
)
from factorgym.envs.live.paper_orders import (
    _REASONS, engine_config, fill_amount_orders, fill_limit_orders, validate_order,
)
from factorgym.errors import ConfigError

__all__ = ["PaperExchange", "engine_config"]
FILL_KINDS = ("order", "untradable_close", "liquidation")


class PaperExchange:
    """A simulated exchange over a candle feed; see the module docstring for the rules.

    Args:
        candles: a ``FactorTensor`` (or anything with ``prices`` [T, A, 5] o/h/l/c/v, ``timestamps``,
            ``tradable``, ``symbols``, optional ``funding`` and ``meta``): the bars the exchange fills
            against, each known once it has closed.
        symbols: the tensor's symbols by default (unified ``BASE/QUOTE``, one quote currency).
        timeframe: the tensor's (``meta["timeframe"]``) by default.
        execution: fees, slippage, lot rules, leverage, borrow (the env's :class:`ExecutionConfig`).
        initial_cash: quote units at the start of a new run.
        state_dir: where ``events.sqlite`` lives; an existing log is replayed (the run resumes).
        run_id: the run's name inside the log.
        long_only: a spot account (True) or a margin account that may go short and borrow.
        participation: cap on an amount order's fill, as a fraction of the bar's volume (None: no cap).
        remainder: ``"cancel"`` or ``"keep"`` the part of an order the cap left unfilled.
        latency_bars: orders fill this many bars after the one they were placed for.
        funding: [T, A] funding rates to use instead of ``candles.funding``.
        durable: commit each event with a full fsync (see :class:`EventLog`).
        group_commit: commit the log every that many batches (a replay, which recomputes what a
            kill loses; see :class:`EventLog`); 1 (live candles, a real exchange): each before it
            is acted on. :meth:`commit` and :meth:`close` commit what is pending.
        keep_history: done orders and trades held in RAM (the latest; the open orders always);
            older ones are read from the log when asked for. None: hold all (memory grows with the run).
    """

    id = "paper"

    def __init__(self, candles: Any, *, symbols: list[str] | None = None, timeframe: str | None = None,
                 execution: ExecutionConfig | None = None, initial_cash: float = 10_000.0, state_dir: str | Path,
                 run_id: str = "paper", long_only: bool = True, participation: float | None = None,
                 remainder: str = "cancel", latency_bars: int = 0, funding: np.ndarray | None = None,
                 durable: bool = True, group_commit: int = 1, keep_history: int | None = KEEP_HISTORY) -> None:
        if remainder not in ("cancel", "keep"):
            raise ConfigError(f"remainder={remainder!r}; expected 'cancel' or 'keep'")
        if participation is not None and not (0.0 < participation <= 1.0):
            raise ConfigError(f"participation={participation!r}; expected a fraction in (0, 1] or None")
        if int(latency_bars) != latency_bars or latency_bars < 0:
            raise ConfigError(f"latency_bars={latency_bars!r}; expected an integer >= 0")
        self.symbols = list(symbols if symbols is not None else candles.symbols)
        if list(candles.symbols) != self.symbols:
            raise ConfigError(f"symbols {self.symbols} differ from the candles' {list(candles.symbols)}")
        quotes = {s.split("/")[1].split(":")[0] for s in self.symbols if "/" in s}
        if len(quotes) > 1:
            raise ConfigError(f"symbols {self.symbols} have several quote currencies {sorted(quotes)}; expected one")
        self.quote = quotes.pop() if quotes else "USDT"
        self.bases = [s.split("/")[0] if "/" in s else s for s in self.symbols]
        meta = dict(getattr(candles, "meta", None) or {})
        self.timeframe = timeframe or str(meta.get("timeframe", "1h"))
        self.tf_ms = timeframe_to_ms(self.timeframe)
        self.execution = execution or ExecutionConfig()
        self.long_only = bool(long_only)
        self.participation, self.remainder, self.latency_bars = participation, remainder, int(latency_bars)
        self.keep_history = keep_history
        self.config = engine_config(self.execution, self.symbols, meta, initial_cash=float(initial_cash),
                                    long_only=self.long_only)
        self.rules = [market_rules(*(self.config[len(CONFIG) + RULE._fields.index(k) * len(self.symbols) + i]
                                     for k in ("fee", "lot_step", "min_amount", "min_notional", "price_step")))
                      for i in range(len(self.symbols))]
        self.slippage = Slippage(*(float(self.config[getattr(CONFIG, k)])
                                   for k in ("fixed_slippage", "impact", "impact_exponent")))
        # the feed: price records exactly as the env builds them
        if funding is not None:
            candles = _WithFunding(candles, np.asarray(funding, dtype=np.float64))
        self.feed = candles if hasattr(candles, "append") else None  # a growing CandleFeed (live candles)
        if self.feed is not None:
            self._sync_feed()
        else:
            self._prices = np.asarray(candles.prices, dtype=np.float64)
            self._tradable = np.ascontiguousarray(candles.tradable, dtype=bool)
            self._records = price_records(candles, self._tradable)
            self._timestamps = np.asarray(candles.timestamps, dtype=np.int64)
            self._index = {int(t): k for k, t in enumerate(self._timestamps)}
        self.markets = self._markets()
        self._panel_index: dict[tuple, Any] = {}  # symbols asked by ohlcv_panel -> their columns
        self._block = pk.new_block(len(self.symbols))
        self.book = self._new_book()  # (checks keep_history before the log is opened)
        self.events = EventLog(Path(state_dir) / "events.sqlite", run_id, durable=durable, group_commit=group_commit)
        for event in self.events:
            self.book.apply(event)
            if event.kind == "candle" and self.feed is not None:
                self.feed.append(*candle_from_payload(event.data, len(self.symbols)))
        if self.feed is not None:
            self._sync_feed()
        if self.events.last_seq == 0:
            self._emit("start", 0, initial_cash=float(initial_cash), symbols=self.symbols, quote=self.quote,
                       timeframe=self.timeframe, long_only=self.long_only, latency_bars=self.latency_bars,
                       participation=participation, remainder=remainder, config=self.config.tolist())
        else:
            self._check_same_run()

    # ------------------------------------------------------------------ ccxt's unified calls
    def load_markets(self, reload: bool = False) -> dict[str, dict[str, Any]]:
        return self.markets

    def fetch_ohlcv(self, symbol: str, timeframe: str = "1h", since: int | None = None,
                    limit: int | None = None) -> list[list[float]]:
        """Closed candles (open before ``now``) of the bars the market traded, oldest first."""
        i = self._symbol_index(symbol)
        ts = self._timestamps
        lo, hi = self._closed_rows(timeframe, since)
        rows: list[list[float]] = []
        while lo < hi and (limit is None or len(rows) < limit):  # (a page reads only what it returns)
            stop = hi if limit is None else min(hi, lo + limit - len(rows))
            rows += [[t, *p] for t, p, ok in zip(ts[lo:stop].tolist(), self._prices[lo:stop, i, :5].tolist(),
                                                 self._tradable[lo:stop, i].tolist()) if ok]
            lo = stop
        return rows

    def ohlcv_arrays(self, symbol: str, timeframe: str = "1h", since: int | None = None,
                     limit: int | None = None) -> dict[str, np.ndarray]:
        """:meth:`fetch_ohlcv`'s candles (the same rows) as numpy arrays, without a Python list per
        candle: ``time`` int64 and ``open``, ``high``, ``low``, ``close``, ``volume`` float64, oldest first."""
        i = self._symbol_index(symbol)
        ts = self._timestamps
        lo, hi = self._closed_rows(timeframe, since)
        ok = self._tradable[lo:hi, i]
        if np.count_nonzero(ok) == ok.shape[0]:  # (the common case, a slice: cheaper than picking rows)
            hi = hi if limit is None else min(hi, lo + max(int(limit), 0))
            rows, times = self._prices[lo:hi, i, :5], ts[lo:hi].copy()
        else:
            k = lo + np.flatnonzero(ok)
            if limit is not None:
                k = k[:max(int(limit), 0)]
            rows, times = self._prices[k, i, :5], ts[k]
        o, h, low, c, v = rows.T.copy()
        return {"time": times, "open": o, "high": h, "low": low, "close": c, "volume": v}

    def ohlcv_panel(self, symbols: list[str], timeframe: str = "1h", since: int | None = None,
                    limit: int | None = None) -> dict[str, np.ndarray]:
        """:meth:`fetch_ohlcv`'s candles of several symbols at once, as one panel (what the live loop
        reads each bar; one call instead of one per symbol): ``time`` int64 [n], the open times at
        which any of ``symbols`` traded, oldest first (at most ``limit``), and ``ohlcv`` float64
        [n, len(symbols), 5], a row of NaN where that symbol has no candle."""
        key = tuple(symbols)
        idx = self._panel_index.get(key)
        if idx is None:
            idx = [self._symbol_index(s) for s in symbols]
            # (the exchange's own symbols in order: a slice, no fancy-index copy per field)
            idx = self._panel_index[key] = slice(None) if idx == list(range(len(self.symbols))) else idx
        ts = self._timestamps
        lo, hi = self._closed_rows(timeframe, since)
        ok = self._tradable[lo:hi][:, idx]
        if np.count_nonzero(ok) != ok.size:
            k = lo + np.flatnonzero(ok.any(axis=1))  # (the times none of them traded are not candles)
            k = k if limit is None else k[:max(int(limit), 0)]
            times, ok = ts[k], self._tradable[k][:, idx]
            ohlcv = np.where(ok[:, :, None], self._prices[k][:, idx, :5], np.nan)
        else:
            hi = hi if limit is None else min(hi, lo + max(int(limit), 0))
            times, ohlcv = ts[lo:hi].copy(), self._prices[lo:hi, idx, :5]
            ohlcv = ohlcv.copy() if type(idx) is slice else ohlcv  # (the caller's own array, never a view)
        return {"time": times, "ohlcv": ohlcv}

    def _closed_rows(self, timeframe: str, since: int | None) -> tuple[int, int]:
        """Feed rows ``[lo, hi)`` of the bars from ``since`` that have closed (open before ``now``)."""
        if timeframe != self.timeframe:
            raise NotSupported(f"paper: timeframe {timeframe!r}; this exchange replays {self.timeframe!r} candles")
        ts = self._timestamps
        now = self.book.now if self.book.now is not None else int(ts[0])
        return 0 if since is None else int(ts.searchsorted(since)), int(ts.searchsorted(now))

    def fetch_balance(self) -> dict[str, Any]:
        return self.book.balance()

    def balance_totals(self) -> dict[str, float]:
        """``fetch_balance()["total"]`` without the rest of the structure (the loop reads it every bar)."""
        book = self.book
        out = {book.quote: book.cash}
        out.update(zip(book.bases, book.positions))
        return out

    def create_order(self, symbol: str, type: str, side: str, amount: float | None, price: float | None = None,
                     params: dict[str, Any] | None = None) -> dict[str, Any]:
        params = dict(params or {})
        cid = params.get("clientOrderId")
        order = self._order_of_client(cid) if cid is not None else None
        if order is not None:  # idempotent: the first order again
            if order["status"] == "rejected":
                raise _ERRORS.get(order["info"].get("reason", "").split(":")[0], InvalidOrder)(
                    f"paper: order {cid!r} was rejected: {order['info'].get('reason')}")
            return _copy(order)
        if self.book.now is None:
            raise ExchangeError("paper: the clock has not started; call advance(ts) before placing orders")
        now = self.book.now
        oid = f"paper-{self.book.n_orders + 1}"
        weight = params.get("targetWeight")
        info = {"dueTs": now + self.latency_bars * self.tf_ms}
        if weight is not None:
            info["targetWeight"] = float(weight)
        if params.get("closePosition"):
            info["closePosition"] = True
        order = {"id": oid, "clientOrderId": cid, "symbol": symbol, "type": type, "side": side, "info": info,
                 "amount": None if weight is not None or amount is None else float(amount)}
        if type == "limit":
            order["price"] = float(price) if isinstance(price, (int, float)) else price
        try:
            validate_order(self, symbol, type, side, amount, weight, bool(params.get("closePosition")), price)
        except ExchangeError as exc:
            info["reason"] = f"{reason_of(exc)}: {exc}"
            self._emit("order_rejected", now, order=order, reason=reason_of(exc), message=str(exc))
            raise
        self._emit("order_accepted", now, order=order)
        return _copy(self.book.orders[oid])

    def fetch_order(self, id: str | None, symbol: str | None = None, params: dict[str, Any] | None = None):
        """Order ``id`` (or ``params={"clientOrderId": ...}``); one the book no longer holds is read
        from the log."""
        cid = (params or {}).get("clientOrderId")
        if id is None:
            order = self._order_of_client(cid) if cid is not None else None
        else:
            order = self.book.orders.get(id)
            if order is None:
                order = book_history.order_by_id(self.events, self.book, id)
        if order is None:
            raise OrderNotFound(f"paper: no order {id if id is not None else cid!r}")
        return _copy(order)

    def fetch_open_orders(self, symbol: str | None = None, since: int | None = None, limit: int | None = None,
                          params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        out = [_copy(o) for o in self.book.open_orders() if symbol is None or o["symbol"] == symbol]
        return out if limit is None else out[:limit]

    def fetch_orders(self, symbol: str | None = None, since: int | None = None, limit: int | None = None,
                     params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The orders placed at or after ``since`` (all: None), in placing order, at most ``limit``;
        those the book no longer holds are read from the log."""
        book = self.book
        if book.evicted_orders:
            out = book_history.orders(self.events, book, symbol=symbol, since=since, limit=limit)
        else:
            out = [o for o in book.orders.values()
                   if (symbol is None or o["symbol"] == symbol) and (since is None or o["timestamp"] >= since)]
        return [_copy(o) for o in (out if limit is None else out[:limit])]

    def cancel_order(self, id: str, symbol: str | None = None, params: dict[str, Any] | None = None):
        order = self.fetch_order(id, symbol, params)
        if order["status"] != "open":
            raise OrderNotFound(f"paper: order {order['id']!r} is {order['status']}, not open")
        self._emit("order_done", self.book.now or 0, id=order["id"], status="canceled", reason="canceled by the user")
        return self.fetch_order(order["id"])

    def fetch_my_trades(self, symbol: str | None = None, since: int | None = None, limit: int | None = None,
                        params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The trades at or after ``since`` (all: None), oldest first, at most ``limit``; those the
        book no longer holds are read from the log."""
        held = self.book.trades
        out = []
        if len(held) < self.book.n_trades and (since is None or not held or held[0]["timestamp"] >= since):
            out = book_history.trades(self.events, self.book, symbol=symbol, since=since, limit=limit,
                                      order_type=lambda oid: self.fetch_order(oid)["type"])
        if limit is None or len(out) < limit:
            out += [t for t in held if (symbol is None or t["symbol"] == symbol)
                    and (since is None or t["timestamp"] >= since)]
        return [_copy_trade(t) for t in (out if limit is None else out[:limit])]

    # ------------------------------------------------------------------ the clock and the log
    def advance(self, ts: int) -> None:
        """Process every bar from ``now`` up to (not including) ``ts`` and set ``now = ts`` (the
        first call only sets the clock). ``ts`` must be a bar open time of the feed (or its end)."""
        ts = int(ts)
        if (ts - int(self._timestamps[0])) % self.tf_ms:
            raise ConfigError(f"paper: advance({ts}) is not on the {self.timeframe} bar grid of the feed")
        if self.book.now is None:
            self._emit("clock", ts, now=ts)
            return
        if ts < self.book.now:
            raise ConfigError(f"paper: advance({ts}) goes back in time (now is {self.book.now})")
        while self.book.now < ts:
            self._process_bar(self.book.now)

    def add_candles(self, ts: int, ohlcv: np.ndarray, ok: np.ndarray) -> None:
        """Append the closed bar at ``ts`` to a growing feed (``candles`` was a ``CandleFeed``): a
        ``candle`` event is written first, so a restart rebuilds the feed from the log. ``ohlcv``
        float64 [A, 5]; ``ok`` bool [A], False where the exchange delivered no bar (a gap)."""
        if self.feed is None:
            raise ConfigError("paper: add_candles needs a growing feed (PaperExchange(CandleFeed(...)))")
        self.feed.check_next(ts)  # (before the event: the log never holds a bar the feed refuses)
        A = len(self.symbols)
        ohlcv, ok = np.asarray(ohlcv, dtype=np.float64), np.asarray(ok, dtype=bool)
        if ohlcv.shape != (A, 5) or ok.shape != (A,):
            raise ConfigError(f"paper: add_candles wants ohlcv [{A}, 5] and ok [{A}], got {ohlcv.shape} and {ok.shape}")
        self._emit("candle", int(ts) + self.tf_ms, **candle_payload(ts, ohlcv, ok))
        self.feed.append(ts, ohlcv, ok)
        self._sync_feed()

    def _sync_feed(self) -> None:
        """Point the feed arrays at the growing feed's current views."""
        f = self.feed
        self._prices, self._tradable, self._records, self._timestamps = f.prices, f.tradable, f.records, f.timestamps
        self._index = f.index

    def record_decision(self, bar_ts: int, obs_hash: str, action: Any) -> None:
        """Log a decision (the bar it was taken at the close of, the observation's hash, the action)."""
        if type(action) is not list or not all(type(a) is float for a in action):  # (the loop's: a list of floats)
            action = np.asarray(action, dtype=np.float64).tolist() if not isinstance(action, dict) else action
        act = action
        self._emit("decision", self.book.now if self.book.now is not None else int(bar_ts), bar_ts=int(bar_ts),
                   obs_hash=str(obs_hash), action=act)

    def batch(self) -> "_PaperBatch":
        """``with exchange.batch(): ...``: the events of the block (a bar's decision and orders) are
        committed together when it ends (one commit instead of one each). The caller acts on what
        the block returned only after it ends; a crash inside it leaves none of them (an exception
        rolls the log back and rebuilds the book from it)."""
        return _PaperBatch(self)

    def _rebuild_book(self) -> None:
        """The book (and a growing feed) from the log, after a block's events were rolled back."""
        self.book = self._new_book()
        candles = 0
        for event in self.events:
            self.book.apply(event)
            candles += event.kind == "candle"
        if self.feed is not None:  # (the block's candles were rolled back with it)
            self.feed.truncate(candles)
            self._sync_feed()

    def state_at(self, ts: int) -> dict[str, Any]:
        """The account as it stood at time ``ts`` (UTC ms): the log's events up to it, replayed."""
        book = self._new_book()
        for event in self.events.events(until_ts=int(ts)):
            book.apply(event)
        return book.summary()

    def status(self) -> dict[str, Any]:
        """Balances, positions, open orders, equity, last decision and event count now."""
        return self.book.summary()

    @property
    def now(self) -> int | None:
        return self.book.now

    def commit(self) -> None:
        """Commit the log's pending batches (``group_commit`` > 1): before a pause, or a report."""
        self.events.commit()

    def close(self) -> None:
        """Commit what is pending and close the log."""
        self.events.close()

    # ------------------------------------------------------------------ internals
    def _emit(self, kind: str, ts: int, /, **data: Any) -> None:
        """Append the event (committed), then apply it to the book."""
        self.book.apply(self.events.append_data(kind, ts, data))

    def _new_book(self) -> Book:
        return Book(self.symbols, self.bases, self.quote, keep=self.keep_history)

    def _order_of_client(self, cid: Any) -> dict[str, Any] | None:
        """The order placed with client id ``cid`` (the book's, or rebuilt from the log), or None."""
        oid = self.book.client_ids.get(cid)
        if oid is not None:
            return self.book.orders[oid]
        if self.book.evicted_orders:
            return book_history.order_by_client_id(self.events, self.book, cid)
        return None

    def _check_same_run(self) -> None:
        start = next(iter(self.events), None)
        if start is None or start.kind != "start":
            raise ConfigError(f"{self.events.path}: run {self.events.run_id!r} has no start event")
        if start.data["symbols"] != self.symbols or start.data["config"] != self.config.tolist():
            raise ConfigError(f"{self.events.path}: run {self.events.run_id!r} was started with other symbols or "
                              f"execution settings; use a new --state folder or the same settings")

    def _symbol_index(self, symbol: str) -> int:
        try:
            return self.symbols.index(symbol)
        except ValueError:
            raise BadSymbol(f"paper: unknown symbol {symbol!r}; markets are {self.symbols}") from None

    def _last_mark(self, i: int) -> float:
        k = self._index.get(self.book.now, len(self._timestamps)) - 1
        return float(self._records[max(k, 0), i, PRICE.mark])

    def _markets(self) -> dict[str, dict[str, Any]]:
        out = {}
        for sym, base, r in zip(self.symbols, self.bases, self.rules):
            out[sym] = {"id": sym.replace("/", ""), "symbol": sym, "base": base, "quote": self.quote, "type": "spot",
                        "spot": True, "margin": not self.long_only, "active": True, "taker": r.fee, "maker": r.fee,
                        "precision": {"amount": r.lot_step or None, "price": r.price_step or None},
                        "limits": {"amount": {"min": r.min_amount or None, "max": None},
                                   "cost": {"min": r.min_notional or None, "max": None}}}
        return out

    def _process_bar(self, f_ts: int) -> None:
        """The env's step at fill bar ``f_ts``: compute every outcome, log it in one transaction, apply."""
        k = self._index.get(f_ts)
        if k is None:
            raise ConfigError(f"paper: no candles for the bar at {iso(f_ts)}; the feed ends at "
                              f"{iso(int(self._timestamps[-1]))}")
        A = len(self.symbols)
        record = self._records[k]
        due = [o for o in self.book.open_orders() if o["info"]["dueTs"] <= f_ts]
        weights = np.full(A, np.nan)
        weight_orders: dict[int, dict] = {}
        superseded = []
        for o in due:
            if "targetWeight" in o["info"]:
                i = self.symbols.index(o["symbol"])
                if i in weight_orders:
                    superseded.append(weight_orders[i])
                weight_orders[i], weights[i] = o, o["info"]["targetWeight"]
        cash0, pos0 = self.book.cash, np.asarray(self.book.positions, dtype=np.float64)
        pk.orders_nb(self.config, record, cash0, pos0, weights, self._block)
        fills = pk.fills_of(self._block, A).tolist()  # (Python floats: cheaper than numpy scalars, same values)
        status = pk.order_status_of(self._block, A).tolist()
        cash, pos = pk.account_of(self._block, A)
        close_ts = f_ts + self.tf_ms
        events: list[tuple[str, dict]] = [("order_done", {"id": o["id"], "status": "canceled",
                                                          "reason": "superseded by a later target"})
                                          for o in superseded]
        n_trades = self.book.n_trades
        symbols = self.symbols

        def trade(i, q, price, fee, slip, order_id, kind):
            nonlocal n_trades
            n_trades += 1
            return {"id": f"t{n_trades}", "order": order_id, "ts": f_ts, "symbol": symbols[i],
                    "side": "buy" if q > 0 else "sell", "amount": abs(float(q)), "price": float(price),
                    "fee": float(fee), "info": {"kind": kind, "slippage_cost": float(slip)}}

        def fill(*args):
            events.append(("fill", {"trade": trade(*args)}))

        # a weight order fills once: its fill rides on its order_done event; fill order: sells, buys
        for i in sorted(weight_orders, key=lambda i: (fills[i][0] >= 0, i)):
            o = weight_orders[i]
            q, price, fee, slip = fills[i]
            t = trade(i, q, price, fee, slip, o["id"], "order") if q != 0.0 else None
            done = "closed" if status[i] in (FILLED, IGNORED_NO_CHANGE) else "rejected"
            name = ORDER_STATUS[status[i]]
            events.append(("order_done", {"id": o["id"], "status": done, "amount": abs(q), "trade": t,
                                          "reason": None if done == "closed" else _REASONS.get(name, name)}))
        cash, pos = fill_amount_orders(self, due, record, cash, pos, fill, events)
        cash, pos = fill_limit_orders(self, due, record, cash, pos, fill, events)
        for i in range(A):  # untradable closes (kind 1)
            q, price, fee, slip = fills[A + i]
            if q != 0.0:
                fill(i, q, price, fee, slip, None, "untradable_close")
        summary = np.zeros(len(pk.SUMMARY))
        pk.close_nb(self.config, cash, pos, self._block, summary)
        equity, borrow, funding, liquidated = summary.tolist()
        if liquidated > 0:
            liq = pk.fills_of(self._block, A).tolist()
            for i in range(A):
                q, price, fee, slip = liq[2 * A + i]
                if q != 0.0:
                    fill(i, q, price, fee, slip, None, "liquidation")
        cash, pos = pk.account_of(self._block, A)
        state = "liquidated" if liquidated > 0 else ("bankrupt" if equity <= 0 else "ok")
        events.append(("bar", {"bar_ts": f_ts, "now": close_ts, "cash": cash, "positions": pos.tolist(),
                               "equity": equity, "borrow": borrow, "funding": funding, "status": state}))
        with self.events.batch():
            written = [self.events.append_data(kind, close_ts, data) for kind, data in events]
        for event in written:
            self.book.apply(event)

class _PaperBatch:
    """:meth:`PaperExchange.batch`'s context manager (a class, not a generator: it runs twice a bar)."""

    __slots__ = ("ex", "inner")

    def __init__(self, ex: PaperExchange) -> None:
        self.ex, self.inner = ex, ex.events.batch()

    def __enter__(self) -> PaperExchange:
        self.inner.__enter__()
        return self.ex

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        try:
            self.inner.__exit__(exc_type, exc, tb)
        except BaseException:
            self.ex._rebuild_book()
            raise
        if exc_type is not None:
            self.ex._rebuild_book()
        return False


_ERRORS = {"InsufficientFunds": InsufficientFunds, "BadSymbol": BadSymbol, "InvalidOrder": InvalidOrder,
           "NotSupported": NotSupported}


def _copy(order: dict) -> dict:
    """A copy of an order structure the caller may change (its nested dicts and lists copied too;
    ``dict.copy`` rather than ``dict(...)``/``{**...}``: half the cost, two copies an order a bar)."""
    out = order.copy()
    out["info"], out["fee"] = order["info"].copy(), order["fee"].copy()
    out["fees"] = [f.copy() for f in order["fees"]]
    out["trades"] = [_copy_trade(t) for t in order["trades"]]
    return out


def _copy_trade(trade: dict) -> dict:
    """A copy of a trade structure the caller may change."""
    out = trade.copy()
    out["fee"], out["info"] = trade["fee"].copy(), trade["info"].copy()
    out["fees"] = [f.copy() for f in trade["fees"]]
    return out


class _WithFunding:
    """The candles with another funding array (for ``price_records``)."""

    def __init__(self, candles: Any, funding: np.ndarray) -> None:
        self._c, self.funding = candles, funding

    def __getattr__(self, name: str) -> Any:
        return getattr(self._c, name)
