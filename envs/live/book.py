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
"""

from __future__ import annotations

import copy
import datetime as _dt
import functools
from typing import Any

from factorgym.envs.live.events import Event


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


class Book:
    """The paper account: a projection of the event log (change it only through :meth:`apply`)."""

    def __init__(self, symbols: list[str], bases: list[str], quote: str) -> None:
        self.symbols, self.bases, self.quote = list(symbols), list(bases), quote
        self.cash = 0.0
        self.positions = [0.0] * len(symbols)
        self.equity = 0.0
        self.initial_cash = 0.0
        self.now: int | None = None  # the open time of the bar new market orders fill at
        self.orders: dict[str, dict[str, Any]] = {}
        self.open: dict[str, dict[str, Any]] = {}  # the open ones, in placing order
        self.client_ids: dict[str, str] = {}
        self.trades: list[dict[str, Any]] = []
        self.last_decision: dict[str, Any] | None = None
        self.last_bar: dict[str, Any] | None = None
        self.status = "ok"
        self.n_events = 0
        self.fees = self.borrow = self.funding = 0.0

    def apply(self, event: Event) -> None:
        d = event.data
        kind = event.kind
        self.n_events = event.seq
        if kind == "start":
            self.cash = self.equity = self.initial_cash = float(d["initial_cash"])
        elif kind == "clock":
            self.now = int(d["now"])
        elif kind == "decision":
            self.last_decision = d
        elif kind in ("order_accepted", "order_rejected"):
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
        elif kind == "fill":
            self._trade(d["trade"])
        elif kind == "order_done":
            if d.get("trade"):  # (a weight order's one fill rides on its order_done event)
                self._trade(d["trade"])
            order = self.orders[d["id"]]
            self.open.pop(d["id"], None)
            order["status"] = d["status"]
            order["lastUpdateTimestamp"] = event.ts
            if d.get("amount") is not None:  # (a target-weight order's size is known at its fill)
                order["amount"] = d["amount"]
            if order["amount"] is not None:
                order["remaining"] = max(order["amount"] - order["filled"], 0.0)
            if d.get("reason"):
                order["info"] = {**order["info"], "reason": d["reason"]}
        elif kind == "bar":
            self.cash = float(d["cash"])
            self.positions = [float(x) for x in d["positions"]]
            self.equity = float(d["equity"])
            self.now = int(d["now"])
            self.status = d["status"]
            self.borrow += d["borrow"]
            self.funding += d["funding"]
            self.last_bar = d

    def _trade(self, t: dict[str, Any]) -> None:
        """A fill (compact: id, order, ts, symbol, side, amount, price, fee, info) into the trades
        and its order."""
        trade = trade_struct(id=t["id"], order_id=t["order"], ts=t["ts"], symbol=t["symbol"], side=t["side"],
                             amount=t["amount"], price=t["price"], fee=t["fee"], quote=self.quote, info=t["info"])
        self.trades.append(trade)
        self.fees += trade["fee"]["cost"]
        order = self.orders.get(trade["order"]) if trade["order"] is not None else None
        if order is not None:
            filled = order["filled"] + trade["amount"]
            cost = order["cost"] + trade["cost"]
            order["filled"], order["cost"] = filled, cost
            order["average"] = cost / filled if filled > 0 else None
            if order["type"] == "limit":  # a resting order filled when the market came to it
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
            "open_orders": [copy.deepcopy(o) for o in self.open_orders()], "n_trades": len(self.trades),
            "fees": self.fees, "borrow": self.borrow, "funding": self.funding,
            "last_decision": self.last_decision, "events": self.n_events,
        }
