"""The orders of one :class:`~factorgym.envs.live.live_env.LiveTradingEnv` step: planned from the
action with the env's own sizing (the shadow env, or target weights on the paper exchange), sent
with deterministic client ids (a resent order is never a second order), rejections logged as events
and never raised, submitted orders waited for until filled or timed out and cancelled.

:class:`OrderFlow` is a mixin of ``LiveTradingEnv`` (it uses the env's book, window, shadow env,
exchange and event log)."""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from factorgym.envs.layouts import FILL, OUT_WEIGHTS
from factorgym.envs.live.loop_parts import REJECTIONS, client_order_id, error_name, target_weights

log = logging.getLogger(__name__)

DONE_STATUSES = ("closed", "canceled", "rejected", "expired")


class OrderFlow:
    """Plan, submit and follow the orders of a decision (see the module docstring)."""

    def plan_orders(self, action) -> list[dict]:
        """The orders for ``action`` (no exchange call): dicts with symbol, side, amount, exact,
        clientOrderId (and targetWeight in weights mode); sells first, then buys, each in asset order."""
        A, t = len(self.symbols), self.bar_ts
        b = self._book
        if self.order_mode == "weights":
            act = self._shadow._to_action(action) if not isinstance(action, np.ndarray) or action.ndim != 1 else action
            w = target_weights(self._shadow.core.config, np.asarray(act, dtype=np.float64), A)
            held = self._weights().tolist()
            marks, equity = self._last_close.tolist(), b["equity"]
            warming = ((self._mask[-1] == 0) & self._delivered).tolist()
            orders = []
            for i, (wi, hi, mi, warm) in enumerate(zip(w.tolist(), held, marks, warming)):
                if math.isnan(wi) or warm:
                    continue  # hold, or still in its warm-up: no order (a gap bar's asset gets its order; the
                    # exchange rejects it at the fill if that bar does not trade either, as the env does)
                est = abs(wi - hi) * equity / mi if mi > 0 else 0.0
                orders.append({"asset": i, "symbol": self.symbols[i], "side": "buy" if wi > hi else "sell",
                               "amount": est, "targetWeight": wi, "exact": wi == 0.0,
                               "clientOrderId": self._cid(t, self.symbols[i])})
            return orders
        tradable = np.array([i in self._forming and self._mask[-1, i] > 0 for i in range(A)])
        ref = np.array([self._forming.get(i, self._last_close[i]) for i in range(A)])
        bar = np.empty((A, 5))
        bar[:, :4] = ref[:, None]
        bar[:, 4] = self._last_volume  # (the fill bar's volume is unknown: the last bar's stands in)
        self._load_shadow(False, self._last_close, bar, tradable & (ref > 0), t + self.tf_ms)
        self._shadow_step(action, b)
        fills = self._shadow.core.fills[0]
        after = self._shadow.core.out[0, OUT_WEIGHTS + A:OUT_WEIGHTS + 2 * A]
        orders = []
        for i in range(A):
            qty = float(fills[i, FILL.quantity])
            if qty != 0.0:
                exact = bool(after[i] == 0.0 and qty == -b["positions"][i])
                orders.append({"asset": i, "symbol": self.symbols[i], "side": "buy" if qty > 0 else "sell",
                               "amount": abs(qty), "exact": exact,
                               "clientOrderId": self._cid(t, self.symbols[i])})
        orders.sort(key=lambda o: (o["side"] == "buy", o["asset"]))
        return orders

    def _cid(self, bar_ts: int, symbol: str, attempt: int = 0):
        """The exchange's own client id form where it has one (``CcxtExchange.client_order_id``)."""
        own = self.__dict__.get("_own_cid", False)
        if own is False:
            own = self._own_cid = getattr(self.exchange, "client_order_id", None)
        return own(bar_ts, symbol, attempt) if callable(own) else client_order_id(self.run_id, bar_ts, symbol, attempt)

    def submit(self, orders: list[dict]) -> list[dict]:
        """Send ``orders`` in order (idempotent: a resent client id never makes a second order); return
        the final order structures (``{"status": "rejected", "reason": ...}`` for a rejection)."""
        results = []
        for o in orders:
            params = {"clientOrderId": o["clientOrderId"]}
            if "targetWeight" in o:
                params["targetWeight"] = o["targetWeight"]
            elif o["exact"]:
                params["closePosition"] = True
            order = None
            for attempt in range(5):
                try:
                    order = self.exchange.create_order(o["symbol"], "market", o["side"], o["amount"], None, params)
                    break
                except Exception as exc:  # noqa: BLE001 - classified by ccxt's class names
                    name = error_name(exc)
                    if name in REJECTIONS or name == "AuthenticationError":
                        self._event("order_rejected", self.bar_ts, symbol=o["symbol"], side=o["side"], amount=o["amount"],
                                    client_id=o["clientOrderId"], reason=name)
                        order = {"status": "rejected", "reason": name, "clientOrderId": o["clientOrderId"]}
                        break
                    log.warning("create_order %s %s: %s (try %d); resending with the same client id",
                                o["side"], o["symbol"], name, attempt + 1)
                    time.sleep(min(self.poll_s * (attempt + 1), 5.0))
            if order is None:
                self._event("order_unknown", self.bar_ts, symbol=o["symbol"], client_id=o["clientOrderId"])
                order = {"status": "unknown", "clientOrderId": o["clientOrderId"]}
            results.append(order)
        return results

    def _wait_fill(self, order: dict, o: dict) -> dict:
        """The order once filled, cancelled or rejected; after ``fill_timeout_s`` it is cancelled."""
        if order.get("status") == "open" and order.get("id") is not None:
            try:
                order = self.exchange.fetch_order(order["id"], o["symbol"])
            except Exception as exc:  # noqa: BLE001
                log.warning("fetch_order %s: %s", o["clientOrderId"], error_name(exc))
        deadline = time.monotonic() + self.fill_timeout_s
        while order.get("status") not in DONE_STATUSES + ("unknown",):
            if time.monotonic() >= deadline:
                try:
                    order = self.exchange.cancel_order(order["id"], o["symbol"])
                except Exception as exc:  # noqa: BLE001
                    log.warning("cancel %s: %s", o["clientOrderId"], error_name(exc))
                self._event("order_timeout", self.bar_ts, symbol=o["symbol"], client_id=o["clientOrderId"])
                break
            time.sleep(self.poll_s)
            try:
                order = self.exchange.fetch_order(order["id"], o["symbol"])
            except Exception as exc:  # noqa: BLE001
                log.warning("fetch_order %s: %s", o["clientOrderId"], error_name(exc))
        return order
