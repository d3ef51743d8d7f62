"""The paper account as a projection of its event log, and ccxt's structures built from it.

:class:`Book` holds what the events say (cash, positions, orders, trades, the clock); it changes only
in :meth:`Book.apply`, one event at a time, so the state of a running paper exchange and the state
replayed from its log are the same object built the same way. Event kinds and what they set:

| kind             | fields                                                    | effect                       |
| ---------------- | --------------------------------------------------------- | ---------------------------- |
| ``start``        | initial_cash, symbols, quote, settings                    | cash = initial cash          |
| ``clock``        | now                                                       | the first bar of the clock   |
| ``decision``     | bar_ts, obs_hash, action                                  | last decision                |
| ``order_accepted`` | order (id, clientOrderId, symbol, type, side, amount, info) | order open                 |
| ``order_rejected`` | order (as accepted), reason, message                    | order kept for idempotency   |
| ``fill``         | trade (id, order, ts, symbol, side, amount, price, fee, info) | trade; its order's filled |
| ``order_done``   | id, status (closed, canceled, rejected), reason, trade    | (its fill, then) order status |
| ``bar``          | bar_ts, now, cash, positions, equity, borrow, funding, status | balances after a bar      |
| ``log_repaired`` | dropped_seq, reason, replayed_to                          | (none: a note)               |

History in RAM is capped (``keep``): the book holds every open order, the ``keep`` orders that ended
most recently and the ``keep`` latest trades; older ones live in the log alone (a real exchange keeps
them server-side; :mod:`factorgym.envs.live.book_history` rebuilds them from their events). What it
keeps of them: the counters (orders and trades placed, which name the next ids), the totals (fees,
borrow, funding), a mark every :data:`MARK_EVERY` orders and trades (the event it came with: where a
look-up starts reading), and :class:`ClientIdIndex` (16 bytes an order: an old client id sent again
finds its order, never a new one). So memory grows by about 16 bytes an order, not by the orders.
"""

from __future__ import annotations

import copy
import datetime as _dt
import functools
from array import array
from collections import deque
from typing import Any

import numpy as np

from factorgym.envs.live.events import Event
from factorgym.errors import ConfigError

#: orders and trades a book keeps in RAM by default (besides the open orders); None keeps all
KEEP_HISTORY = 10_000
#: a mark (the event's seq and time) every that many orders and trades: a look-up in the log reads
#: from the mark before what it wants
MARK_EVERY = 256
ORDER_KINDS = ("order_accepted", "order_rejected")


@functools.lru_cache(maxsize=4096)
def iso(ms: int | None) -> str | None:
    """ccxt's ``datetime``: ISO 8601 with milliseconds and a Z."""
    if ms is None:
        return None
    t = _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def order_struct(*, id: str, client_id: str | None, ts: int, symbol: str, type: str, side: str,
                 amount: float | None, quote: str, info: dict[str, Any]) -> dict[str, Any]:
    """A new, unfilled ccxt order structure."""
    return {
        "id": id, "clientOrderId": client_id, "timestamp": ts, "datetime": iso(ts), "lastTradeTimestamp": None,
        "lastUpdateTimestamp": ts, "symbol": symbol, "type": type, "timeInForce": "IOC", "postOnly": False,
        "reduceOnly": bool(info.get("closePosition", False)), "side": side, "price": None, "stopPrice": None,
        "triggerPrice": None, "takeProfitPrice": None, "stopLossPrice": None, "average": None, "amount": amount,
        "filled": 0.0, "remaining": amount, "cost": 0.0, "status": "open", "fee": {"cost": 0.0, "currency": quote},
        "fees": [{"cost": 0.0, "currency": quote}], "trades": [], "info": info,
    }


def trade_struct(*, id: str, order_id: str | None, ts: int, symbol: str, side: str, amount: float, price: float,
                 fee: float, quote: str, info: dict[str, Any]) -> dict[str, Any]:
    """A ccxt trade structure (a market order's fill: taker)."""
    return {
        "id": id, "order": order_id, "timestamp": ts, "datetime": iso(ts), "symbol": symbol, "type": "market",
        "side": side, "takerOrMaker": "taker", "price": price, "amount": amount, "cost": amount * price,
        "fee": {"cost": fee, "currency": quote}, "fees": [{"cost": fee, "currency": quote}], "info": info,
    }


def make_trade(t: dict[str, Any], quote: str, order_type: str | None) -> dict[str, Any]:
    """The trade structure of a fill's compact form (id, order, ts, symbol, side, amount, price, fee,
    info); ``order_type``: its order's type (a limit order's fill is a maker's limit trade)."""
    trade = trade_struct(id=t["id"], order_id=t["order"], ts=t["ts"], symbol=t["symbol"], side=t["side"],
                         amount=t["amount"], price=t["price"], fee=t["fee"], quote=quote, info=t["info"])
    if order_type == "limit":  # a resting order filled when the market came to it
        trade.update(type="limit", takerOrMaker="maker")
    return trade


class ClientIdIndex:
    """``hash(client id)`` -> seq of its order's first event, for the orders a book no longer holds:
    two sorted int64 arrays (16 bytes an order) and a dict of the latest, merged in every
    :attr:`MERGE`. ``hash`` is the process's own (salted): the index is rebuilt by each replay, never
    stored. A hit is a candidate (hashes may collide): the caller checks the order in the log."""

    MERGE = 4096

    def __init__(self) -> None:
        self._keys = np.empty(0, np.int64)
        self._seqs = np.empty(0, np.int64)
        self._tail: dict[int, int] = {}

    def add(self, client_id: Any, seq: int) -> None:
        h = hash(client_id)
        if h in self._tail:  # (a collision: the arrays hold any number under one hash)
            self._merge()
        self._tail[h] = seq
        if len(self._tail) >= self.MERGE:
            self._merge()

    def get(self, client_id: Any) -> list[int]:
        """The seqs filed under the client id's hash, latest first."""
        h = hash(client_id)
        out = [self._tail[h]] if h in self._tail else []
        keys = self._keys
        k = int(keys.searchsorted(h))
        while k < len(keys) and keys[k] == h:
            out.append(int(self._seqs[k]))
            k += 1
        return sorted(out, reverse=True)

    def _merge(self) -> None:
        pairs = sorted(self._tail.items())
        keys = np.fromiter((h for h, _ in pairs), np.int64, len(pairs))
        at = self._keys.searchsorted(keys, side="right")
        self._keys = np.insert(self._keys, at, keys)
        self._seqs = np.insert(self._seqs, at, np.fromiter((q for _, q in pairs), np.int64, len(pairs)))
        self._tail.clear()

    def __len__(self) -> int:
        return len(self._keys) + len(self._tail)

    def state(self) -> tuple:
        """Everything it holds, comparable (a test: a replayed book equals the running one)."""
        return self._keys.tolist(), self._seqs.tolist(), dict(self._tail)


class Book:
    """The paper account: a projection of the event log (change it only through :meth:`apply`).

    ``keep``: done orders and trades held in RAM (the latest; None: all), see the module docstring.
    """

    # (slots: an instance dict of more than 30 keys loses CPython's fast attribute access, ~10 % of a replay)
    __slots__ = ("keep", "symbols", "bases", "quote", "cash", "positions", "equity", "initial_cash", "now", "orders",
                 "open", "client_ids", "trades", "n_orders", "n_trades", "placed", "_done", "old_client_ids",
                 "evicted_orders", "last_evicted_seq", "mark_every", "order_marks", "order_mark_ts", "trade_marks",
                 "trade_mark_ts", "last_decision", "last_bar", "status", "n_events", "fees", "borrow", "funding")

    def __init__(self, symbols: list[str], bases: list[str], quote: str, keep: int | None = KEEP_HISTORY) -> None:
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 0):
            raise ConfigError(f"keep_history={keep!r}; expected an integer >= 0, or None to keep all")
        self.keep = keep
        self.symbols, self.bases, self.quote = list(symbols), list(bases), quote
        self.cash = 0.0
        self.positions = [0.0] * len(symbols)
        self.equity = 0.0
        self.initial_cash = 0.0
        self.now: int | None = None  # the open time of the bar new market orders fill at
        self.orders: dict[str, dict[str, Any]] = {}  # the open and the `keep` last done, in placing order
        self.open: dict[str, dict[str, Any]] = {}  # the open ones, in placing order
        self.client_ids: dict[str, str] = {}  # client id -> order id, of the orders in `orders`
        self.trades: deque[dict[str, Any]] = deque(maxlen=keep)  # the `keep` latest
        self.n_orders = self.n_trades = 0  # placed so far (ids count on from them)
        self.placed: dict[str, int] = {}  # order id -> seq of its first event, of the orders in `orders` (keep set)
        self._done: deque[str] = deque()  # the done orders in `orders`, in the order they ended (keep set)
        self.old_client_ids = ClientIdIndex()  # of the orders no longer in `orders`
        self.evicted_orders, self.last_evicted_seq = 0, 0  # (the latest first event of those)
        # marks: the seq and time of the event of orders (trades) 1, 1 + mark_every, ...
        self.mark_every = MARK_EVERY
        self.order_marks, self.order_mark_ts = array("q"), array("q")
        self.trade_marks, self.trade_mark_ts = array("q"), array("q")
        self.last_decision: dict[str, Any] | None = None
        self.last_bar: dict[str, Any] | None = None
        self.status = "ok"
        self.n_events = 0
        self.fees = self.borrow = self.funding = 0.0

    def apply(self, event: Event) -> None:
        d = event.data
        kind = event.kind
        self.n_events = event.seq
        # (the kinds of every bar first: a replay applies ~10 events a bar)
        if kind in ("order_accepted", "order_rejected"):
            o = d["order"]  # (compact: id, clientOrderId, symbol, type, side, amount, info)
            order = order_struct(id=o["id"], client_id=o["clientOrderId"], ts=event.ts, symbol=o["symbol"],
                                 type=o["type"], side=o["side"], amount=o["amount"], quote=self.quote, info=o["info"])
            if o["type"] == "limit":  # (good till cancelled; its price is the limit)
                order.update(price=o["price"], timeInForce="GTC")
            if kind == "order_rejected":
                order.update(status="rejected", remaining=0.0)
            else:
                self.open[order["id"]] = order
            self.orders[order["id"]] = order
            if order["clientOrderId"] is not None:
                self.client_ids[order["clientOrderId"]] = order["id"]
            n = self.n_orders
            if n % self.mark_every == 0:
                self.order_marks.append(event.seq)
                self.order_mark_ts.append(event.ts)
            self.n_orders = n + 1
            if self.keep is not None:
                self.placed[order["id"]] = event.seq
                if kind == "order_rejected":
                    self._done.append(order["id"])
                    if len(self._done) > self.keep:
                        self._evict()
        elif kind == "fill":
            self._trade(d["trade"])
        elif kind == "order_done":
            if d.get("trade"):  # (a weight order's one fill rides on its order_done event)
                self._trade(d["trade"])
            order = self.orders[d["id"]]
            was_open = self.open.pop(d["id"], None) is not None
            order["status"] = d["status"]
            order["lastUpdateTimestamp"] = event.ts
            if d.get("amount") is not None:  # (a target-weight order's size is known at its fill)
                order["amount"] = d["amount"]
            if order["amount"] is not None:
                order["remaining"] = max(order["amount"] - order["filled"], 0.0)
            if d.get("reason"):
                order["info"] = {**order["info"], "reason": d["reason"]}
            if was_open and self.keep is not None:  # (done: the oldest done order beyond `keep` leaves RAM)
                self._done.append(d["id"])
                if len(self._done) > self.keep:
                    self._evict()
        elif kind == "bar":
            self.cash = float(d["cash"])
            self.positions = [float(x) for x in d["positions"]]
            self.equity = float(d["equity"])
            self.now = int(d["now"])
            self.status = d["status"]
            self.borrow += d["borrow"]
            self.funding += d["funding"]
            self.last_bar = d
        elif kind == "decision":
            self.last_decision = d
        elif kind == "start":
            self.cash = self.equity = self.initial_cash = float(d["initial_cash"])
        elif kind == "clock":
            self.now = int(d["now"])

    def _evict(self) -> None:
        """The oldest done order leaves RAM (its client id goes to the compact index)."""
        old = self._done.popleft()
        order = self.orders.pop(old)
        seq = self.placed.pop(old)
        cid = order["clientOrderId"]
        if cid is not None:
            if self.client_ids.get(cid) == old:
                del self.client_ids[cid]
            self.old_client_ids.add(cid, seq)
        self.evicted_orders += 1
        if seq > self.last_evicted_seq:
            self.last_evicted_seq = seq

    def _trade(self, t: dict[str, Any]) -> None:
        """A fill (compact: id, order, ts, symbol, side, amount, price, fee, info) into the trades
        and its order."""
        trade = trade_struct(id=t["id"], order_id=t["order"], ts=t["ts"], symbol=t["symbol"], side=t["side"],
                             amount=t["amount"], price=t["price"], fee=t["fee"], quote=self.quote, info=t["info"])
        order = self.orders.get(trade["order"]) if trade["order"] is not None else None
        n = self.n_trades
        if n % self.mark_every == 0:
            self.trade_marks.append(self.n_events)
            self.trade_mark_ts.append(trade["timestamp"])
        self.n_trades = n + 1
        self.trades.append(trade)
        self.fees += trade["fee"]["cost"]
        if order is not None:
            filled = order["filled"] + trade["amount"]
            cost = order["cost"] + trade["cost"]
            order["filled"], order["cost"] = filled, cost
            order["average"] = cost / filled if filled > 0 else None
            if order["type"] == "limit":  # a resting order filled when the market came to it (as make_trade)
                trade.update(type="limit", takerOrMaker="maker")
            else:
                order["price"] = order["average"]
            if order["amount"] is not None:
                order["remaining"] = max(order["amount"] - filled, 0.0)
            fee = order["fee"]["cost"] + trade["fee"]["cost"]
            order["fee"] = {"cost": fee, "currency": self.quote}
            order["fees"] = [dict(order["fee"])]
            order["trades"].append(trade)
            order["lastTradeTimestamp"] = order["lastUpdateTimestamp"] = trade["timestamp"]

    # ---- ccxt structures
    def open_orders(self) -> list[dict[str, Any]]:
        return list(self.open.values())

    def balance(self) -> dict[str, Any]:
        """ccxt's balance structure: the quote is the cash, each base a position (negative = short)."""
        out: dict[str, Any] = {"info": {"source": "paper"}, "timestamp": self.now, "datetime": iso(self.now),
                               "free": {}, "used": {}, "total": {}}
        for cur, total in [(self.quote, self.cash), *zip(self.bases, self.positions)]:
            out[cur] = {"free": total, "used": 0.0, "total": total}
            out["free"][cur], out["used"][cur], out["total"][cur] = total, 0.0, total
        return out

    def summary(self) -> dict[str, Any]:
        """Balances, positions, open orders, equity, last decision, event count (status output)."""
        return {
            "time": self.now, "datetime": iso(self.now), "cash": self.cash, "quote": self.quote,
            "positions": dict(zip(self.symbols, self.positions)), "equity": self.equity, "status": self.status,
            "open_orders": [copy.deepcopy(o) for o in self.open_orders()], "n_trades": self.n_trades,
            "fees": self.fees, "borrow": self.borrow, "funding": self.funding,
            "last_decision": self.last_decision, "events": self.n_events,
        }
