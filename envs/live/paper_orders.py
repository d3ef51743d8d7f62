"""The paper exchange's order rules: the kernels' config, refusals at placing, amount-order fills.

Split from :mod:`factorgym.envs.live.paper` (whose docstring states the rules); ``ex`` is the
:class:`~factorgym.envs.live.paper.PaperExchange`.
"""

from __future__ import annotations

import math

import numpy as np

from factorgym.envs.config import ExecutionConfig, resolve_per_symbol
from factorgym.envs.execution import (
    FILLED, IGNORED_NO_CHANGE, ORDER_STATUS, REJECTED_UNTRADABLE, Slippage, buy_scale_nb, process_order,
    round_lot_nb,
)
from factorgym.envs.layouts import CONFIG, PRICE, RULE, inverse
from factorgym.envs.live.exchange import InsufficientFunds, InvalidOrder

_REASONS = {  # fill status -> (order status, reason)
    "ignored_lot": "InvalidOrder: amount rounds to 0 at the lot step",
    "ignored_min_amount": "InvalidOrder: amount below the market's minimum",
    "ignored_min_notional": "InvalidOrder: notional below the market's minimum at the open",
    "rejected_untradable": "MarketClosed: the market did not trade that bar",
}


def engine_config(execution: ExecutionConfig, symbols: list[str], meta: dict | None, *, initial_cash: float,
                  long_only: bool) -> np.ndarray:
    """The kernels' ``config`` array (``CONFIG`` then ``RULE`` x A), as ``PortfolioCore`` builds it
    (a test holds the two equal); the reward and action fields are unused here and 0."""
    per = resolve_per_symbol(execution, symbols, meta)
    rules = {"fee": per["fee"], "lot_step": per["lot_step"], "inv_lot_step": inverse(per["lot_step"]),
             "min_amount": per["min_amount"], "min_notional": per["min_notional"], "price_step": per["price_step"],
             "inv_price_step": inverse(per["price_step"])}
    settings = dict.fromkeys(CONFIG._fields, 0.0)
    settings.update({
        "fixed_slippage": (execution.slippage_bps + execution.half_spread_bps) / 1e4,
        "impact": execution.impact_coef, "impact_exponent": execution.impact_exponent,
        "borrow_rate": execution.borrow_rate_per_bar, "max_leverage": execution.max_leverage,
        "maintenance_margin": execution.maintenance_margin, "initial_cash": initial_cash,
        "long_only": float(long_only), "close_untradable": float(execution.on_untradable == "close"),
    })
    return np.concatenate([[settings[name] for name in CONFIG._fields],
                           np.stack([rules[name] for name in RULE._fields]).reshape(-1)]).astype(np.float64)




def validate_order(ex, symbol, type, side, amount, weight, close_position, price=None) -> None:
    """Refuse an order before it is accepted (the reasons a ccxt exchange gives at once)."""
    i = ex._symbol_index(symbol)
    if type not in ("market", "limit"):
        raise InvalidOrder(f"paper: order type {type!r} is not supported; use 'market' or 'limit'")
    if side not in ("buy", "sell"):
        raise InvalidOrder(f"paper: side {side!r}; expected 'buy' or 'sell'")
    if type == "limit":
        if weight is not None or close_position:
            raise InvalidOrder("paper: a limit order takes an amount (not targetWeight or closePosition)")
        if not isinstance(price, (int, float)) or not math.isfinite(price) or price <= 0:
            raise InvalidOrder(f"paper: limit order price {price!r} of {symbol}; expected a positive number")
    if weight is not None:
        if not isinstance(weight, (int, float)) or math.isinf(weight):
            raise InvalidOrder(f"paper: targetWeight {weight!r}; expected a finite number (NaN holds)")
        return
    if close_position:
        return
    if amount is None or not math.isfinite(amount) or amount <= 0:
        raise InvalidOrder(f"paper: amount {amount!r} of {symbol}; expected a positive number of base units")
    rules = ex.rules[i]
    q = round_lot_nb(float(amount), rules.lot_step, rules.inv_lot_step)
    if q <= 0:
        raise InvalidOrder(f"paper: amount {amount} of {symbol} rounds to 0 at the lot step {rules.lot_step}")
    if q < rules.min_amount:
        raise InvalidOrder(f"paper: amount {q} of {symbol} is below the minimum {rules.min_amount}")
    mark = ex._last_mark(i) if type == "market" else float(price)
    if side == "buy" and ex.long_only:
        committed = sum(o["remaining"] * (o["price"] if o["type"] == "limit" else ex._last_mark(ex.symbols.index(o["symbol"])))
                        for o in ex.book.open_orders() if o["side"] == "buy" and o["amount"])
        cost = q * mark * (1.0 + rules.fee)
        if cost + committed > ex.book.cash:
            raise InsufficientFunds(f"paper: buying {q} {symbol} costs about {cost:.8g} {ex.quote}; "
                                    f"free cash is {ex.book.cash - committed:.8g}")
    if side == "sell" and ex.long_only:
        held = ex.book.positions[i] - sum(o["remaining"] for o in ex.book.open_orders()
                                            if o["symbol"] == symbol and o["side"] == "sell" and o["amount"])
        if q > held * (1 + 1e-12):
            raise InsufficientFunds(f"paper: selling {q} {symbol} but {max(held, 0.0):.8g} is free")



def fill_amount_orders(ex, due, record, cash, pos, fill, events):
    """Fill the due amount orders through ``process_order``: sells, then buys (long-only:
    scaled together to the cash, as the env does). Returns the new cash and positions."""
    orders = [o for o in due if "targetWeight" not in o["info"] and o["type"] == "market"]
    if not orders:
        return cash, pos
    plans = []
    for o in orders:
        i = ex.symbols.index(o["symbol"])
        exact = bool(o["info"].get("closePosition"))
        want = -pos[i] if exact else (o["remaining"] if o["side"] == "buy" else -o["remaining"])
        vol = record[i, PRICE.inv_volume]
        cap = ex.participation / vol if (ex.participation and vol > 0) else math.inf
        size = math.copysign(min(abs(want), cap), want) if not exact or abs(want) <= cap else math.copysign(cap, want)
        plans.append((o, i, size, exact and abs(want) <= cap))
    sells = [p for p in plans if p[2] < 0]
    buys = [p for p in plans if p[2] >= 0]
    scale = 1.0
    if ex.long_only and buys:
        cost = 0.0
        for o, i, size, exact in buys:
            _, _, r = process_order(cash, pos[i], size, *_fill_args(ex, record, i), exact=exact)
            cost += r.quantity * r.price + r.fee
        # (after the sells, whose proceeds pay for the buys)
        cash_after_sells = cash
        for o, i, size, exact in sells:
            cash_after_sells, _, _ = process_order(cash_after_sells, pos[i], size, *_fill_args(ex, record, i),
                                                   exact=exact)
        scale = float(buy_scale_nb(cash_after_sells, cost))
    for o, i, size, exact in sells + [(o, i, s * scale, e) for o, i, s, e in buys]:
        cash, pos[i], r = process_order(cash, pos[i], size, *_fill_args(ex, record, i), exact=exact,
                                        tradable=bool(record[i, PRICE.tradable] > 0))
        name = ORDER_STATUS[int(r.status)]
        if r.status == FILLED:
            fill(i, r.quantity, r.price, r.fee, r.slippage_cost, o["id"], "order")
        filled = o["filled"] + abs(r.quantity)
        left = (o["amount"] - filled) if not o["info"].get("closePosition") else 0.0
        rules = ex.rules[i]
        left = round_lot_nb(max(left, 0.0), rules.lot_step, rules.inv_lot_step)  # (lot dust is no remainder)
        if r.status not in (FILLED, IGNORED_NO_CHANGE) and filled == 0:
            events.append(("order_done", {"id": o["id"], "status": "rejected", "reason": _REASONS.get(name, name)}))
        elif left > 1e-12 * o["amount"] and ex.remainder == "keep" and r.status != REJECTED_UNTRADABLE:
            continue  # stays open, due again at the next bar
        elif left > 1e-12 * max(o["amount"], 1e-300):
            events.append(("order_done", {"id": o["id"], "status": "canceled",
                                          "reason": f"unfilled remainder {left:g} cancelled"}))
        else:
            events.append(("order_done", {"id": o["id"], "status": "closed",
                                          "amount": filled if o["info"].get("closePosition") else None}))
    return cash, pos


NO_SLIPPAGE = Slippage(0.0, 0.0, 1.0)


def fill_limit_orders(ex, due, record, cash, pos, fill, events):
    """Fill the due limit orders, in placing order, where the bar traded through their price: a buy
    when its low is below the limit, at the limit or at the open if that is lower (a gap through it);
    a sell when its high is above, at the limit or the higher open. Each goes through
    ``process_order`` at that price without slippage (capped at ``participation`` x the bar's
    volume; long-only: buys scaled to the cash, sells to the position). What is left stays open
    until filled or cancelled. Returns the new cash and positions."""
    for o in (o for o in due if o["type"] == "limit"):
        i = ex.symbols.index(o["symbol"])
        limit, buy = float(o["price"]), o["side"] == "buy"
        if record[i, PRICE.tradable] <= 0 or not (record[i, PRICE.low] < limit if buy else record[i, PRICE.high] > limit):
            continue
        price = min(limit, record[i, PRICE.open]) if buy else max(limit, record[i, PRICE.open])
        want = o["remaining"] if buy else -o["remaining"]
        vol = record[i, PRICE.inv_volume]
        cap = ex.participation / vol if (ex.participation and vol > 0) else math.inf
        size = math.copysign(min(abs(want), cap), want)
        rules = ex.rules[i]
        if ex.long_only:
            size = size * float(buy_scale_nb(cash, size * price * (1.0 + rules.fee))) if buy else max(size, -max(pos[i], 0.0))
        if size == 0.0:
            continue
        cash, pos[i], r = process_order(cash, pos[i], size, price, vol, rules, NO_SLIPPAGE)
        if r.status == FILLED:
            fill(i, r.quantity, r.price, r.fee, r.slippage_cost, o["id"], "order")
            filled = o["filled"] + abs(r.quantity)
            if round_lot_nb(max(o["amount"] - filled, 0.0), rules.lot_step, rules.inv_lot_step) <= 1e-12 * o["amount"]:
                events.append(("order_done", {"id": o["id"], "status": "closed", "amount": None}))
        elif r.status != IGNORED_NO_CHANGE and o["filled"] == 0:
            name = ORDER_STATUS[int(r.status)]
            events.append(("order_done", {"id": o["id"], "status": "rejected", "reason": _REASONS.get(name, name)}))
    return cash, pos


def _fill_args(ex, record, i):
    return float(record[i, PRICE.open]), float(record[i, PRICE.inv_volume]), ex.rules[i], ex.slippage
