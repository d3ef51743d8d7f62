"""The signed spot-account side of the loopback fake Binance (:mod:`tests.fake_exchange`).

Binance's shapes for ``POST/GET/DELETE /api/v3/order``, ``GET /api/v3/openOrders``,
``GET /api/v3/allOrders``, ``GET /api/v3/myTrades`` and ``GET /api/v3/account``. Requests must carry
the ``X-MBX-APIKEY`` header and an HMAC-SHA256 ``signature`` of the rest of the query (and body) with
the account's secret, as ccxt's real ``binance`` class signs them.

Market orders fill at once at the symbol's price "now" (:func:`fake_exchange.kline_row`'s close),
with a 0.1% fee in the quote. Binance's errors: ``-1121`` Invalid symbol (also for
:attr:`FakeAccount.delisted` symbols), ``-1013`` Filter failure: LOT_SIZE / NOTIONAL, ``-2010``
Account has insufficient balance / Duplicate order sent (a reused ``newClientOrderId``), ``-2013``
Order does not exist, ``-1022`` / ``-2015`` for a bad signature or key.

Faults on ``POST /api/v3/order``: the order is booked first, then the answer is the fault (a
timeout, a 5xx, a dropped connection: the dangerous case where the client cannot know it was
placed); a 429 refuses it before booking, as Binance's rate limiter does. :attr:`FakeAccount.book`
(every order ever booked, by client id) is what tests check for doubled orders.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

FEE = Decimal("0.001")


def _dec(x: Any) -> Decimal:
    return Decimal(str(x))


def _fmt(x: Decimal) -> str:
    return f"{x:.8f}"


class FakeAccount:
    """One Binance spot account (balances as Decimals) and its order book."""

    def __init__(self, fx: Any, *, api_key: str, secret: str, balances: dict[str, float] | None = None) -> None:
        self.fx, self.api_key, self.secret = fx, api_key, secret
        self.balances = {k: _dec(v) for k, v in (balances or {"USDT": 100_000}).items()}
        self.orders: list[dict] = []  # Binance order rows, in booking order
        self.trades: list[dict] = []
        self.book: dict[str, list[int]] = {}  # client order id -> orderIds booked with it (never > 1)
        self.delisted: set[str] = set()  # Binance ids answered with -1121 on orders
        self.lock = threading.Lock()
        self._next_id = 1000

    # ---- HTTP entry point
    def handle(self, method: str, path: str, raw_query: str, body: str, headers: Any) -> tuple[int, Any, bool]:
        """(status, payload, booked): ``booked`` tells the server an order was placed by this request."""
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        params.update(dict(parse_qsl(body or "", keep_blank_values=True)))
        if headers.get("X-MBX-APIKEY") != self.api_key:
            return 401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}, False
        signed = "&".join(p for p in (raw_query, body) if p)
        payload, _, signature = signed.rpartition("&signature=")
        expect = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, expect):
            return 400, {"code": -1022, "msg": "Signature for this request is not valid."}, False
        with self.lock:
            if path == "/api/v3/order" and method == "POST":
                return self._new_order(params)
            if path == "/api/v3/order" and method == "GET":
                return self._find(params)
            if path == "/api/v3/order" and method == "DELETE":
                status, order, _ = self._find(params)
                if status != 200:
                    return status, order, False
                return 400, {"code": -2011, "msg": "Unknown order sent."}, False  # market orders never rest
            if path == "/api/v3/openOrders":
                return 200, [], False
            if path == "/api/v3/allOrders":
                return 200, [o for o in self.orders if o["symbol"] == params.get("symbol")], False
            if path == "/api/v3/myTrades":
                return 200, [t for t in self.trades if t["symbol"] == params.get("symbol")], False
            if path == "/api/v3/account":
                rows = [{"asset": a, "free": _fmt(v), "locked": "0.00000000"} for a, v in self.balances.items()]
                return 200, {"makerCommission": 10, "takerCommission": 10, "canTrade": True, "canWithdraw": True,
                             "canDeposit": True, "updateTime": self.fx.now_ms, "accountType": "SPOT",
                             "balances": rows, "permissions": ["SPOT"]}, False
        return 404, None, False

    # ---- orders
    def _market(self, symbol_id: str):
        from tests.fake_exchange import MARKETS
        for m in MARKETS.values():
            if m.symbol_id == symbol_id and symbol_id not in self.delisted:
                return m
        return None

    def _new_order(self, p: dict) -> tuple[int, Any, bool]:
        from tests.fake_exchange import HOUR_MS, kline_row
        market = self._market(p.get("symbol", ""))
        if market is None:
            return 400, {"code": -1121, "msg": "Invalid symbol."}, False
        cid = p.get("newClientOrderId") or f"auto{self._next_id}"
        if cid in self.book:
            return 400, {"code": -2010, "msg": "Duplicate order sent."}, False
        if p.get("type") != "MARKET":
            return 400, {"code": -1013, "msg": "Only market orders on this fake."}, False
        qty = _dec(p.get("quantity", "0"))
        step = _dec(market.step_size)
        if qty <= 0 or qty % step != 0 or qty < _dec(market.min_qty):
            return 400, {"code": -1013, "msg": "Filter failure: LOT_SIZE"}, False
        bar = self.fx.now_ms // HOUR_MS * HOUR_MS
        price = _dec(kline_row(market, bar, HOUR_MS, self.fx.now_ms)[4])
        notional = qty * price
        if notional < _dec(market.min_notional):
            return 400, {"code": -1013, "msg": "Filter failure: NOTIONAL"}, False
        fee = notional * FEE
        side = p.get("side")
        base, quote = market.base, market.quote
        if side == "BUY" and self.balances.get(quote, Decimal(0)) < notional + fee:
            return 400, {"code": -2010, "msg": "Account has insufficient balance for requested action."}, False
        if side == "SELL" and self.balances.get(base, Decimal(0)) < qty:
            return 400, {"code": -2010, "msg": "Account has insufficient balance for requested action."}, False
        sign = 1 if side == "BUY" else -1
        self.balances[base] = self.balances.get(base, Decimal(0)) + sign * qty
        self.balances[quote] = self.balances.get(quote, Decimal(0)) - sign * notional - fee
        self._next_id += 1
        oid = self._next_id
        now = self.fx.now_ms
        order = {"symbol": market.symbol_id, "orderId": oid, "orderListId": -1, "clientOrderId": cid,
                 "price": "0.00000000", "origQty": _fmt(qty), "executedQty": _fmt(qty),
                 "cummulativeQuoteQty": _fmt(notional), "status": "FILLED", "timeInForce": "GTC", "type": "MARKET",
                 "side": side, "stopPrice": "0.00000000", "icebergQty": "0.00000000", "time": now, "updateTime": now,
                 "isWorking": True, "workingTime": now, "origQuoteOrderQty": "0.00000000",
                 "selfTradePreventionMode": "EXPIRE_MAKER"}
        self.orders.append(order)
        self.book.setdefault(cid, []).append(oid)
        self.trades.append({"symbol": market.symbol_id, "id": oid * 10, "orderId": oid, "orderListId": -1,
                            "price": _fmt(price), "qty": _fmt(qty), "quoteQty": _fmt(notional),
                            "commission": _fmt(fee), "commissionAsset": quote, "time": now, "isBuyer": side == "BUY",
                            "isMaker": False, "isBestMatch": True})
        full = {**order, "transactTime": now,
                "fills": [{"price": _fmt(price), "qty": _fmt(qty), "commission": _fmt(fee),
                           "commissionAsset": quote, "tradeId": oid * 10}]}
        return 200, full, True

    def _find(self, p: dict) -> tuple[int, Any, bool]:
        cid, oid = p.get("origClientOrderId"), p.get("orderId")
        for o in self.orders:
            if o["symbol"] == p.get("symbol") and ((cid and o["clientOrderId"] == cid) or
                                                  (oid and str(o["orderId"]) == oid)):
                return 200, o, False
        return 400, {"code": -2013, "msg": "Order does not exist."}, False
