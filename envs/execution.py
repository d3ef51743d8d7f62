"""The one execution and accounting core: how an order fills and what it does to an account.

Everything that moves money is a small scalar function here, in the style of vectorbt's
``process_order_nb``: :func:`process_order` (one order against one bar), :func:`fill_order_nb` and
:func:`apply_fill_nb` (its two halves), :func:`borrow_charge_nb`, :func:`funding_charge_nb`,
:func:`buy_scale_nb` and :func:`liquidation_point_nb`. Each order returns a status code
(``FILLED``, ``IGNORED_*``, ``REJECTED_*``) instead of raising. The batched kernels
(:mod:`factorgym.envs.kernels`) inline these functions for every fill of the single env, the vector
env and the backtest; the paper exchange calls :func:`process_order` one order at a time from plain
Python (plain floats and the :class:`MarketRules` / :class:`Slippage` namedtuples).

Order of operations in one step of one environment (decision at the close of bar t):

1. map the action to target weights w* (fraction of equity per asset, signed);
2. value the book at the open of bar f = t+1 (untradable assets at their last close): E_open;
3. per tradable asset, target quantity q* = w* x E_open / open; order = q* - q;
   assets not tradable at bar f are rejected (``REJECTED_UNTRADABLE``);
4. sells first (so their proceeds can pay for buys): fill at open x (1 - s), fee on the proceeds;
5. buys: fill at open x (1 + s); long-only: if their total cost (fees included) exceeds cash, every
   buy is scaled by the same factor (:func:`buy_scale_nb`), then rounded down to its lot again --
   cash never goes negative;
6. positions in assets untradable at f: kept and valued at their last close (``freeze``) or closed
   at that price with the fee, no slippage (``close``);
7. long/short, intrabar liquidation: the book is valued with every asset at its adverse extreme of
   bar f (low for a long, high for a short; the last close where untradable). If equity there is
   below maintenance_margin x gross exposure, the prices are taken to move together in a straight
   line from the open to those extremes, and every position is closed at the first point of that
   line where the margin is breached (:func:`liquidation_point_nb`; the open itself if the book is
   already breached there, a gap), fee and slippage paid; the episode terminates (``LIQUIDATED``).
   For one asset that is the price P* where cash + q P* = maintenance_margin x |q| P*;
8. otherwise, at the close of f: borrow, ``borrow_rate_per_bar`` x (short notional + borrowed
   cash); funding, ``funding[f, i]`` x q_i x close_i per asset (positive rate: longs pay, shorts
   receive); both from cash;
9. mark to market at the close of f: E = cash + sum(q x close); long/short: if E < maintenance_margin
   x gross exposure (the charges of step 8 can tip it), every position is closed at the close, fee
   and slippage paid (``LIQUIDATED``); E <= 0 terminates (``BANKRUPT``);
10. reward from E_t -> E_f; observation of bar f written into the output row.

Rounding rules (floating point, as vectorbt's nb.py documents its own):

- a quantity is rounded *down* to its lot step: ``floor(q * (1 / step) + 1e-9) * step``, with
  ``1 / step`` computed once per symbol (a multiply in the hot loop instead of a division); the 1e-9
  (of one step) absorbs round-off such as 0.3 / 0.1 = 2.9999999999999996; orders that round to 0, or
  fall below ``min_amount`` (base units) or ``min_notional`` (quantity x open, quote units), are
  ignored with a status code;
- a target weight of exactly 0 closes the whole position without lot rounding (no dust is left):
  an ``exact`` order, which skips the lot and the minimums;
- an order smaller than 1e-10 of the target (or held) quantity is round-off of an unchanged
  target (e.g. holding 100% while the price moves) and is not sent (``IGNORED_NO_CHANGE``);
- fill prices are rounded to the price step against the trader: buys up
  (``ceil(p * (1 / step) - 1e-9) * step``), sells down (``floor(p * (1 / step) + 1e-9) * step``);
- the impact participation is ``qty * (1 / bar volume)``, the reciprocal stored once per bar; the
  slippage fraction is capped at ``MAX_SLIP``;
- the long-only buy scale factor is ``cash / cost x (1 - 1e-12)`` so that round-off cannot make
  cash negative;
- fees are fee_rate x quantity x fill price, never rounded; a sell adds ``qty x price - fee`` to
  cash, a buy subtracts ``qty x price + fee`` (one rounding each).
"""

from __future__ import annotations

from collections import namedtuple

import numba
import numpy as np

from factorgym.envs.intrinsics import select_nb, sqrt_nb
from factorgym.envs.jit import JIT
from factorgym.envs.layouts import inverse

# ---- order status codes (vectorbt style) --------------------------------------------------------
FILLED = 0
IGNORED_NO_CHANGE = 1
IGNORED_LOT = 2
IGNORED_MIN_AMOUNT = 3
IGNORED_MIN_NOTIONAL = 4
REJECTED_UNTRADABLE = 5
ORDER_STATUS = ("filled", "ignored_no_change", "ignored_lot", "ignored_min_amount",
                "ignored_min_notional", "rejected_untradable")

# ---- environment status codes --------------------------------------------------------------------
ENV_OK = 0
ENV_BANKRUPT = 1
ENV_LIQUIDATED = 2
ENV_BAD_ACTION = -1
ENV_BAD_SHAPE = -2  # the action has the wrong number of values (checked in the kernel)
ENV_STATUS = {ENV_OK: "ok", ENV_BANKRUPT: "bankrupt", ENV_LIQUIDATED: "liquidated"}

# ---- action schemes and rewards -----------------------------------------------------------------
SCHEME_SIMPLEX, SCHEME_SIGNED, SCHEME_DIRECT, SCHEME_DISCRETE = 0, 1, 2, 3
REWARD_LOG, REWARD_SHARPE, REWARD_DRAWDOWN, REWARD_TURNOVER = 0, 1, 2, 3

LOT_EPS = 1e-9
NOISE = 1e-10  # |order| <= 1e-10 x |target or position| is round-off, not an order
CASH_SAFETY = 1e-12
MAX_SLIP = 0.5
LOG_FLOOR = 1e-12  # equity ratio floor of the log return on bankruptcy: log(1e-12) ~ -27.6

#: one symbol's market rules; ``inv_*`` = 1 / step (0 where the step is 0): build with :func:`market_rules`
MarketRules = namedtuple("MarketRules", "fee lot_step inv_lot_step min_amount min_notional price_step inv_price_step")
#: slippage fraction = fixed + impact x (qty / bar volume) ** impact_exponent, capped at MAX_SLIP
Slippage = namedtuple("Slippage", "fixed impact impact_exponent")
#: what an order did: ``quantity`` signed (+ bought, - sold, 0 unless filled), ``price`` the fill
#: price (the reference price unless filled), ``fee`` and ``slippage_cost`` (qty x |price - ref|) in quote
OrderResult = namedtuple("OrderResult", "status quantity price fee slippage_cost")


def market_rules(fee: float = 0.0, lot_step: float = 0.0, min_amount: float = 0.0, min_notional: float = 0.0,
                 price_step: float = 0.0) -> MarketRules:
    """:class:`MarketRules` from plain values (the reciprocals computed as the env computes them)."""
    return MarketRules(float(fee), float(lot_step), float(inverse(lot_step)), float(min_amount), float(min_notional),
                       float(price_step), float(inverse(price_step)))


@numba.njit(inline="always", **JIT)
def round_lot_nb(qty: float, step: float, inv_step: float) -> float:
    """``qty`` (>= 0) rounded down to a multiple of ``step`` (0 = no rounding); ``inv_step`` = 1 / step."""
    if step > 0.0:
        return np.floor(qty * inv_step + LOT_EPS) * step
    return qty


@numba.njit(inline="always", **JIT)
def fill_order_nb(size, exact, ref_price, inv_volume, rules, slippage, any_exponent=True):
    """How a market order of ``size`` base units (+ buy, - sell) fills against ``ref_price``: an
    :class:`OrderResult`. Changes no account (:func:`apply_fill_nb` does).

    ``exact`` skips lot rounding and the minimums (closing a whole position). ``inv_volume`` is
    1 / the bar's volume, 0 when unknown (no impact term). Branch-free in the order's side and
    status (selects: a learning agent's order signs are random, and mispredicted branches cost more
    than computing a fill and discarding it); only per-symbol settings branch. ``any_exponent=False``
    (for an exponent of 0.5 or no impact) compiles without the general power, whose call would keep
    the kernels' loops from vectorising."""
    q = abs(size)
    qr = select_nb(exact, q, round_lot_nb(q, rules.lot_step, rules.inv_lot_step))
    # the first failing check gives the status: tested in reverse order, each overriding the last
    status = select_nb(qr * ref_price < rules.min_notional, IGNORED_MIN_NOTIONAL, FILLED)
    status = select_nb(qr < rules.min_amount, IGNORED_MIN_AMOUNT, status)
    status = select_nb(qr <= 0.0, IGNORED_LOT, status)
    status = select_nb(exact, FILLED, status)
    status = select_nb(q == 0.0, IGNORED_NO_CHANGE, status)
    participation = qr * inv_volume
    if slippage.impact == 0.0:
        impact = 0.0
    elif (slippage.impact_exponent == 0.5) | (not any_exponent):
        impact = sqrt_nb(participation)
    else:
        impact = select_nb(participation > 0.0, participation ** slippage.impact_exponent, 0.0)
    slip = min(slippage.fixed + slippage.impact * impact, MAX_SLIP)
    side = select_nb(size > 0.0, 1.0, -1.0)  # buys pay up, sells receive less
    price = ref_price * (1.0 + side * slip)
    if rules.price_step > 0.0:  # against the trader: buys ceil(p - eps) = -floor(-p + eps), sells floor(p + eps)
        price = -side * np.floor(-side * price * rules.inv_price_step + LOT_EPS) * rules.price_step
    ok = status == FILLED
    filled = select_nb(ok, qr, 0.0)
    return OrderResult(status, select_nb(size > 0.0, filled, -filled), select_nb(ok, price, ref_price),
                       select_nb(ok, qr * price * rules.fee, 0.0), select_nb(ok, qr * abs(price - ref_price), 0.0))


@numba.njit(inline="always", **JIT)
def apply_fill_nb(cash, position, fill, exact):
    """(cash, position) after ``fill`` (an :class:`OrderResult`; an unfilled one changes nothing):
    a sell adds qty x price - fee, a buy subtracts qty x price + fee; an ``exact`` order leaves the
    position at exactly 0."""
    qty = abs(fill.quantity)
    value = qty * fill.price
    cash_change = select_nb(fill.quantity > 0.0, -(value + fill.fee), value - fill.fee)
    filled = fill.status == FILLED
    return (select_nb(filled, cash + cash_change, cash),
            select_nb(filled, select_nb(exact, 0.0, position + fill.quantity), position))


@numba.njit(inline="always", **JIT)
def process_order(cash, position, size, ref_price, inv_volume, rules, slippage, exact=False, tradable=True):
    """Fill one market order and apply it to one account: ``(cash, position, OrderResult)``.

    Args (plain floats, bools and namedtuples; callable from Python and inlined by the kernels):
        cash: quote units held (may be negative where borrowing is allowed).
        position: base units held (negative = short).
        size: the order, base units (+ buy, - sell); 0 is ``IGNORED_NO_CHANGE``.
        ref_price: the bar's reference price (the env: the open of the fill bar).
        inv_volume: 1 / the bar's volume, 0 when unknown (no impact term).
        rules: the symbol's :class:`MarketRules` (:func:`market_rules`).
        slippage: :class:`Slippage`.
        exact: close exactly (no lot rounding, no minimums, position exactly 0 after).
        tradable: False rejects the order (``REJECTED_UNTRADABLE``).

    Orders that are ignored or rejected leave cash and position unchanged and report quantity 0.
    """
    fill = fill_order_nb(size, exact, ref_price, inv_volume, rules, slippage)
    fill = OrderResult(select_nb(tradable, fill.status, REJECTED_UNTRADABLE), select_nb(tradable, fill.quantity, 0.0),
                       select_nb(tradable, fill.price, ref_price), select_nb(tradable, fill.fee, 0.0),
                       select_nb(tradable, fill.slippage_cost, 0.0))
    cash, position = apply_fill_nb(cash, position, fill, exact)
    return cash, position, fill


@numba.njit(inline="always", **JIT)
def close_at_mark_nb(position, mark, fee_rate):
    """The forced close of ``position`` at ``mark`` (an untradable asset's last close): an exact
    order with no slippage and no price step, the taker fee paid. It is :func:`fill_order_nb` for
    those settings, written out (a test holds the two equal)."""
    qty = abs(position)
    status = select_nb(position == 0.0, IGNORED_NO_CHANGE, FILLED)
    return OrderResult(status, -position, mark, qty * mark * fee_rate, 0.0)


@numba.njit(inline="always", **JIT)
def buy_scale_nb(cash, planned_cost):
    """Long-only: the factor every planned buy is scaled by when their cost (fees included) exceeds
    the cash, with a margin of CASH_SAFETY against round-off; 1 when the cash suffices."""
    short = (planned_cost > cash) & (planned_cost > 0.0)
    return select_nb(short, max(cash, 0.0) / select_nb(short, planned_cost, 1.0) * (1.0 - CASH_SAFETY), 1.0)


@numba.njit(inline="always", **JIT)
def borrow_charge_nb(rate, short_notional, cash):
    """Borrow paid for one bar: ``rate`` x (short notional + borrowed cash)."""
    return rate * (short_notional + max(-cash, 0.0))


@numba.njit(inline="always", **JIT)
def funding_charge_nb(rate, position, mark):
    """Funding paid for one bar on one position: ``rate`` x position x mark (positive rate: longs
    pay, shorts receive; a negative charge is received)."""
    return rate * position * mark


@numba.njit(inline="always", **JIT)
def margin_surplus_nb(equity, gross, maintenance_margin):
    """Equity above the maintenance requirement; liquidation when < 0."""
    return equity - maintenance_margin * gross


@numba.njit(inline="always", **JIT)
def liquidation_point_nb(surplus_at_open, surplus_at_extreme):
    """Where on the straight line from the open (0) to the adverse extremes (1) the margin surplus,
    linear along it, reaches 0: the liquidation point of step 7 (0 when already breached at the open)."""
    drop = surplus_at_open - surplus_at_extreme
    return select_nb(surplus_at_open > 0.0, surplus_at_open / select_nb(drop > 0.0, drop, 1.0), 0.0)
