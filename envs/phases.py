"""The accounting phases of a step, over a block of B envs (SIMD lanes): steps 2-9 of the order of
operations in :mod:`factorgym.envs.execution`, each money movement through that module's functions.

Every phase is a loop over the block's lanes in which no env branches on its own values (selects),
so that LLVM turns it into vector code. The per-asset phases are an outer loop over assets around
the loop over lanes, so that sums over assets run in asset order and results are those of a per-env
loop, bit for bit; the per-env values those loops read and sum into live in a stack array of their
own (``totals``, rows ``TOTALS``) and the market rules in a third (``rules``, rows ``RULE`` x A):
LLVM can then prove that no store of the loop aliases another (with everything in one array it
needed more run-time overlap checks than it emits, and the loops stayed scalar). The two rare paths,
the long-only rescaling of buys and liquidation, are scalar passes over the lanes that need them.

The order of the phases exists once, here: :func:`fill_phases_nb` (steps 2-6) and
:func:`settle_phases_nb` (steps 7-9), run by the kernels (``kernels.step_blocks_nb``) and by the paper
exchange (``envs/live/paper_kernel.py``, which fills its own amount orders between the two).
"""

from __future__ import annotations

import math

import numba

from factorgym.envs.execution import (
    FILLED, IGNORED_NO_CHANGE, NOISE, REJECTED_UNTRADABLE, MarketRules, OrderResult, Slippage, apply_fill_nb,
    borrow_charge_nb, buy_scale_nb, close_at_mark_nb, fill_order_nb, funding_charge_nb, liquidation_point_nb,
    margin_surplus_nb,
)
from factorgym.envs.intrinsics import lane_index_nb as lane
from factorgym.envs.intrinsics import select_nb
from factorgym.envs.jit import JIT
from factorgym.envs.layouts import (
    CONFIG, FILL, FILL_LIQUIDATION, FILL_UNTRADABLE_CLOSE, LIQUIDATE_AT_CLOSE, LIQUIDATE_INTRABAR, N_FILL, OUT, PRICE,
    RULE, STATE, STATE_POSITIONS, TEMP, TOTALS,
)

POS = STATE_POSITIONS


@numba.njit(**JIT)
def _rules(rules, i, j, A, B):
    """Asset i's :class:`MarketRules` in lane j of the rules array."""
    return MarketRules(rules[lane(RULE.fee * A + i, j, B)], rules[lane(RULE.lot_step * A + i, j, B)],
                       rules[lane(RULE.inv_lot_step * A + i, j, B)], rules[lane(RULE.min_amount * A + i, j, B)],
                       rules[lane(RULE.min_notional * A + i, j, B)], rules[lane(RULE.price_step * A + i, j, B)],
                       rules[lane(RULE.inv_price_step * A + i, j, B)])


@numba.njit(**JIT)
def _slippage(config):
    return Slippage(config[CONFIG.fixed_slippage], config[CONFIG.impact], config[CONFIG.impact_exponent])


@numba.njit(**JIT)
def _store_fill(block, rows, row, j, fill, A, B):
    """``fill`` into fill row ``row`` (kind x A + asset) of lane j (the block holds fills field-major)."""
    fills = rows.fills
    block[lane(fills + FILL.quantity * 3 * A + row, j, B)] = fill.quantity
    block[lane(fills + FILL.price * 3 * A + row, j, B)] = fill.price
    block[lane(fills + FILL.fee * 3 * A + row, j, B)] = fill.fee
    block[lane(fills + FILL.slippage_cost * 3 * A + row, j, B)] = fill.slippage_cost


@numba.njit(**JIT)
def _load_fill(block, rows, row, j, A, B):
    """The planned fill of row ``row`` of lane j (a buy when its quantity is > 0)."""
    fills = rows.fills
    qty = block[lane(fills + FILL.quantity * 3 * A + row, j, B)]
    return OrderResult(select_nb(qty > 0.0, FILLED, IGNORED_NO_CHANGE), qty,
                       block[lane(fills + FILL.price * 3 * A + row, j, B)],
                       block[lane(fills + FILL.fee * 3 * A + row, j, B)],
                       block[lane(fills + FILL.slippage_cost * 3 * A + row, j, B)])


@numba.njit(**JIT)
def _add_fill(totals, j, fill, applied, B):
    """Count an applied fill into the lane's totals (fees, slippage, traded value, fills)."""
    totals[lane(TOTALS.fees, j, B)] += select_nb(applied, fill.fee, 0.0)
    totals[lane(TOTALS.slippage, j, B)] += select_nb(applied, fill.slippage_cost, 0.0)
    totals[lane(TOTALS.traded, j, B)] += select_nb(applied, abs(fill.quantity) * fill.price, 0.0)
    totals[lane(TOTALS.n_fills, j, B)] += select_nb(applied, 1.0, 0.0)


@numba.njit(inline="always", **JIT)
def orders_and_sells_nb(config, block, totals, rules, rows, A, B):
    """Value the book at the open, size the orders, fill every order: sells applied at once (their
    proceeds pay for the buys), buys planned at full size in their fill rows (``TEMP.buy_cost``)."""
    if config[CONFIG.impact] == 0.0 or config[CONFIG.impact_exponent] == 0.5:
        _orders_loop(config, block, totals, rules, rows, A, False, B)  # (compiled without the power call)
    else:
        _orders_loop(config, block, totals, rules, rows, A, True, B)


@numba.njit(inline="always", **JIT)
def _orders_loop(config, block, totals, rules, rows, A, any_exponent, B):
    slippage = _slippage(config)
    price_open, mark = rows.prices + PRICE.open * A, rows.prices + PRICE.mark * A
    inv_volume, tradable_row = rows.prices + PRICE.inv_volume * A, rows.prices + PRICE.tradable * A
    for j in range(B):
        equity_open = block[lane(STATE.cash, j, B)]
        for i in range(A):  # (the open is the last close where the asset is untradable)
            q = block[lane(POS + i, j, B)]
            equity_open += select_nb(q != 0.0, q * block[lane(price_open + i, j, B)], 0.0)
        totals[lane(TOTALS.live, j, B)] = block[lane(rows.temps + TEMP.live, j, B)]
        totals[lane(TOTALS.equity_open, j, B)] = equity_open
        totals[lane(TOTALS.cash, j, B)] = block[lane(STATE.cash, j, B)]
        for c in range(TOTALS.fees, TOTALS.buy_cost + 1):
            totals[lane(c, j, B)] = 0.0
    for c in range(N_FILL):  # the untradable-close and liquidation rows: no fills yet
        for r in range(A, 3 * A):
            for j in range(B):
                block[lane(rows.fills + c * 3 * A + r, j, B)] = 0.0
    for i in range(A):  # one asset at a time (sums in asset order), all lanes at once
        for j in range(B):
            live = totals[lane(TOTALS.live, j, B)] > 0.0
            equity_open = totals[lane(TOTALS.equity_open, j, B)]
            inv_equity_open = select_nb(equity_open > 0.0, 1.0 / equity_open, 0.0)
            # the order: target quantity minus held quantity (0 for an unchanged target: no fill)
            q = block[lane(POS + i, j, B)]
            w = block[lane(rows.weights + i, j, B)]
            price = block[lane(price_open + i, j, B)]
            target = select_nb(equity_open > 0.0, w * equity_open / price, 0.0)
            size = target - q
            size = select_nb(abs(size) <= NOISE * max(abs(target), abs(q)), 0.0, size)  # round-off
            exact = w == 0.0
            size = select_nb(exact, -q, size)  # exact close, no dust
            size = select_nb(math.isnan(w), 0.0, size)  # hold
            tradable = block[lane(tradable_row + i, j, B)] > 0.0
            size = select_nb(tradable & live, size, 0.0)
            held_weight = q * block[lane(mark + i, j, B)] * inv_equity_open
            rejected = (not tradable) & (abs(w - held_weight) > 1e-12)
            fill = fill_order_nb(size, exact, price, block[lane(inv_volume + i, j, B)], _rules(rules, i, j, A, B),
                                 slippage, any_exponent)
            no_order = select_nb(rejected, REJECTED_UNTRADABLE, IGNORED_NO_CHANGE)
            block[lane(rows.order_status + i, j, B)] = select_nb(size != 0.0, fill.status, no_order)
            block[lane(rows.positions + i, j, B)] = size  # (the order, until finish_nb)
            _store_fill(block, rows, i, j, fill, A, B)
            # a sell is applied at once; a buy is planned (its cost summed)
            sell = (size < 0.0) & (fill.status == FILLED)
            cash, position = apply_fill_nb(totals[lane(TOTALS.cash, j, B)], q, fill, exact)
            block[lane(POS + i, j, B)] = select_nb(sell, position, q)
            totals[lane(TOTALS.cash, j, B)] = select_nb(sell, cash, totals[lane(TOTALS.cash, j, B)])
            _add_fill(totals, j, fill, sell, B)
            buy = (size > 0.0) & (fill.status == FILLED)
            totals[lane(TOTALS.buy_cost, j, B)] += select_nb(buy, fill.quantity * fill.price + fill.fee, 0.0)
    for j in range(B):
        block[lane(rows.temps + TEMP.equity_open, j, B)] = totals[lane(TOTALS.equity_open, j, B)]
        block[lane(STATE.cash, j, B)] = totals[lane(TOTALS.cash, j, B)]
        block[lane(rows.out + OUT.fees, j, B)] = totals[lane(TOTALS.fees, j, B)]
        block[lane(rows.out + OUT.slippage_cost, j, B)] = totals[lane(TOTALS.slippage, j, B)]
        block[lane(rows.out + OUT.turnover, j, B)] = totals[lane(TOTALS.traded, j, B)]  # (traded value until finish_nb)
        block[lane(rows.out + OUT.n_trades, j, B)] = totals[lane(TOTALS.n_fills, j, B)]
        block[lane(rows.temps + TEMP.buy_cost, j, B)] = totals[lane(TOTALS.buy_cost, j, B)]


@numba.njit(**JIT)  # (rare and scalar: compiled on its own, not inlined into the kernel)
def rescale_buys_nb(config, block, rules, rows, A, B):
    """Long-only: in each env whose planned buys cost more than its cash, every buy is scaled by
    :func:`buy_scale_nb` and filled again (rare: a scalar pass over the lanes that need it)."""
    slippage = _slippage(config)
    price_open, inv_volume = rows.prices + PRICE.open * A, rows.prices + PRICE.inv_volume * A
    for j in range(B):
        cost = block[lane(rows.temps + TEMP.buy_cost, j, B)]
        cash = block[lane(STATE.cash, j, B)]
        if not (cost > cash and cost > 0.0):
            continue
        scale = buy_scale_nb(cash, cost)
        for i in range(A):
            planned = _load_fill(block, rows, i, j, A, B)
            if planned.quantity > 0.0:  # scale the lot-rounded quantity (floor(k q) x p(k q) <= k q p(q))
                fill = fill_order_nb(planned.quantity * scale, False, block[lane(price_open + i, j, B)],
                                     block[lane(inv_volume + i, j, B)], _rules(rules, i, j, A, B), slippage)
                block[lane(rows.order_status + i, j, B)] = fill.status
                _store_fill(block, rows, i, j, fill, A, B)  # (quantity 0 if the scaled order is ignored)


@numba.njit(inline="always", **JIT)
def buys_and_closes_nb(config, block, totals, rules, rows, A, B):
    """Apply the planned buys; close (or freeze) positions in assets untradable at the fill bar."""
    close_untradable = config[CONFIG.close_untradable] > 0.0
    mark, tradable_row = rows.prices + PRICE.mark * A, rows.prices + PRICE.tradable * A
    for j in range(B):
        totals[lane(TOTALS.live, j, B)] = block[lane(rows.temps + TEMP.live, j, B)]
        totals[lane(TOTALS.cash, j, B)] = block[lane(STATE.cash, j, B)]
        totals[lane(TOTALS.n_fills, j, B)] = block[lane(rows.out + OUT.n_trades, j, B)]
        totals[lane(TOTALS.fees, j, B)] = block[lane(rows.out + OUT.fees, j, B)]
        totals[lane(TOTALS.slippage, j, B)] = block[lane(rows.out + OUT.slippage_cost, j, B)]
        totals[lane(TOTALS.traded, j, B)] = block[lane(rows.out + OUT.turnover, j, B)]
    for i in range(A):
        for j in range(B):
            fill = _load_fill(block, rows, i, j, A, B)  # (sell rows hold negative quantities, unfilled rows 0)
            buy = fill.quantity > 0.0
            exact = block[lane(rows.weights + i, j, B)] == 0.0
            q = block[lane(POS + i, j, B)]
            cash, position = apply_fill_nb(totals[lane(TOTALS.cash, j, B)], q, fill, exact)
            totals[lane(TOTALS.cash, j, B)] = cash
            block[lane(POS + i, j, B)] = position
            _add_fill(totals, j, fill, buy, B)
    for i in range(A):  # positions in assets that do not trade at bar f: freeze, or close at their last close
        for j in range(B):
            live = totals[lane(TOTALS.live, j, B)] > 0.0
            q = block[lane(POS + i, j, B)]
            close = close_untradable & live & (q != 0.0) & (block[lane(tradable_row + i, j, B)] == 0.0)
            fill = close_at_mark_nb(q, block[lane(mark + i, j, B)], rules[lane(RULE.fee * A + i, j, B)])
            fill = OrderResult(select_nb(close, fill.status, IGNORED_NO_CHANGE), select_nb(close, fill.quantity, 0.0),
                               select_nb(close, fill.price, 0.0), select_nb(close, fill.fee, 0.0),
                               select_nb(close, fill.slippage_cost, 0.0))  # (no close: a row of zeros, see _store_block)
            _store_fill(block, rows, FILL_UNTRADABLE_CLOSE * A + i, j, fill, A, B)
            cash, position = apply_fill_nb(totals[lane(TOTALS.cash, j, B)], q, fill, True)
            totals[lane(TOTALS.cash, j, B)] = cash
            block[lane(POS + i, j, B)] = position
            _add_fill(totals, j, fill, close, B)
    for j in range(B):
        block[lane(STATE.cash, j, B)] = totals[lane(TOTALS.cash, j, B)]
        block[lane(rows.out + OUT.n_trades, j, B)] = totals[lane(TOTALS.n_fills, j, B)]
        block[lane(rows.out + OUT.fees, j, B)] = totals[lane(TOTALS.fees, j, B)]
        block[lane(rows.out + OUT.slippage_cost, j, B)] = totals[lane(TOTALS.slippage, j, B)]
        block[lane(rows.out + OUT.turnover, j, B)] = totals[lane(TOTALS.traded, j, B)]


@numba.njit(inline="always", **JIT)
def intrabar_check_nb(config, block, rows, A, B):
    """Long/short: flag the envs whose margin is breached at the bar's adverse extremes (step 7),
    with the liquidation point on the line from the open to those extremes."""
    maintenance = config[CONFIG.maintenance_margin]
    price_open, low, high = rows.prices + PRICE.open * A, rows.prices + PRICE.low * A, rows.prices + PRICE.high * A
    for j in range(B):
        cash = block[lane(STATE.cash, j, B)]
        equity_open, gross_open, equity_extreme, gross_extreme = cash, 0.0, cash, 0.0
        for i in range(A):  # (untradable assets: open = low = high = the last close)
            q = block[lane(POS + i, j, B)]
            o = block[lane(price_open + i, j, B)]
            x = select_nb(q > 0.0, block[lane(low + i, j, B)], block[lane(high + i, j, B)])
            equity_open += q * o
            gross_open += abs(q) * o
            equity_extreme += q * x
            gross_extreme += abs(q) * x
        surplus_open = margin_surplus_nb(equity_open, gross_open, maintenance)
        surplus_extreme = margin_surplus_nb(equity_extreme, gross_extreme, maintenance)
        live = block[lane(rows.temps + TEMP.live, j, B)] > 0.0
        breached = live & (gross_extreme > 0.0) & (surplus_extreme < 0.0)
        block[lane(rows.temps + TEMP.liquidate, j, B)] = select_nb(breached, LIQUIDATE_INTRABAR, 0.0)
        block[lane(rows.temps + TEMP.liquidation_point, j, B)] = liquidation_point_nb(surplus_open, surplus_extreme)


@numba.njit(inline="always", **JIT)
def charges_and_mark_nb(config, block, rows, A, B):
    """Borrow and funding at the close of the fill bar (step 8), mark to market (step 9), and flag
    the envs whose margin is breached at the close."""
    long_only = config[CONFIG.long_only] > 0.0
    rate = config[CONFIG.borrow_rate]
    maintenance = config[CONFIG.maintenance_margin]
    mark, funding_row = rows.prices + PRICE.mark * A, rows.prices + PRICE.funding * A
    for j in range(B):
        live = block[lane(rows.temps + TEMP.live, j, B)] > 0.0
        cash = block[lane(STATE.cash, j, B)]
        short = 0.0
        for i in range(A):
            q = block[lane(POS + i, j, B)]
            short -= select_nb(q < 0.0, q * block[lane(mark + i, j, B)], 0.0)
        borrow = select_nb(live, borrow_charge_nb(rate, short, cash), 0.0)
        cash -= borrow
        funding = 0.0
        for i in range(A):
            funding += funding_charge_nb(block[lane(funding_row + i, j, B)], block[lane(POS + i, j, B)],
                                         block[lane(mark + i, j, B)])
        funding = select_nb(live, funding, 0.0)
        cash -= funding
        equity = cash
        gross = 0.0
        for i in range(A):
            q = block[lane(POS + i, j, B)]
            equity += select_nb(q != 0.0, q * block[lane(mark + i, j, B)], 0.0)
            gross += select_nb(q != 0.0, abs(q) * block[lane(mark + i, j, B)], 0.0)
        block[lane(STATE.cash, j, B)] = cash
        block[lane(rows.out + OUT.equity, j, B)] = equity
        block[lane(rows.out + OUT.borrow_cost, j, B)] = borrow
        block[lane(rows.out + OUT.funding, j, B)] = funding
        breached = live & (not long_only) & (gross > 0.0) & (margin_surplus_nb(equity, gross, maintenance) < 0.0)
        flag = block[lane(rows.temps + TEMP.liquidate, j, B)]
        block[lane(rows.temps + TEMP.liquidate, j, B)] = select_nb(breached & (flag == 0.0), LIQUIDATE_AT_CLOSE, flag)


@numba.njit(**JIT)  # (rare and scalar: compiled on its own, not inlined into the kernel)
def liquidate_nb(config, block, rules, rows, A, when, B):
    """Close every position of the envs flagged ``when`` (intrabar: at the liquidation point between
    the open and the adverse extremes; at the close: at the close), fee and slippage paid; untradable
    assets at their last close. Rare: a scalar pass over the lanes that need it."""
    slippage = _slippage(config)
    price_open, mark = rows.prices + PRICE.open * A, rows.prices + PRICE.mark * A
    low, high = rows.prices + PRICE.low * A, rows.prices + PRICE.high * A
    inv_volume, tradable_row = rows.prices + PRICE.inv_volume * A, rows.prices + PRICE.tradable * A
    out = rows.out
    for j in range(B):
        if block[lane(rows.temps + TEMP.liquidate, j, B)] != when:
            continue
        point = block[lane(rows.temps + TEMP.liquidation_point, j, B)]
        cash = block[lane(STATE.cash, j, B)]
        for i in range(A):
            q = block[lane(POS + i, j, B)]
            if q == 0.0:
                continue
            if when == LIQUIDATE_INTRABAR:
                o = block[lane(price_open + i, j, B)]
                extreme = block[lane(low + i, j, B)] if q > 0.0 else block[lane(high + i, j, B)]
                ref = o + point * (extreme - o)
            else:
                ref = block[lane(mark + i, j, B)]
            if block[lane(tradable_row + i, j, B)] > 0.0:
                fill = fill_order_nb(-q, True, ref, block[lane(inv_volume + i, j, B)], _rules(rules, i, j, A, B), slippage)
            else:
                fill = close_at_mark_nb(q, block[lane(mark + i, j, B)], rules[lane(RULE.fee * A + i, j, B)])
            cash, _ = apply_fill_nb(cash, q, fill, True)
            block[lane(POS + i, j, B)] = 0.0
            _store_fill(block, rows, FILL_LIQUIDATION * A + i, j, fill, A, B)
            block[lane(out + OUT.n_trades, j, B)] += 1.0
            block[lane(out + OUT.fees, j, B)] += fill.fee
            block[lane(out + OUT.slippage_cost, j, B)] += fill.slippage_cost
            block[lane(out + OUT.turnover, j, B)] += abs(fill.quantity) * fill.price
        block[lane(STATE.cash, j, B)] = cash
        if when == LIQUIDATE_AT_CLOSE:
            block[lane(out + OUT.equity, j, B)] = cash


@numba.njit(inline="always", **JIT)
def fill_phases_nb(config, block, totals, rules, rows, A, B):
    """Steps 2-6 in their order: size the orders at the open and fill them, sells first; long-only,
    rescale the buys that cost more than the cash; apply the buys; close (or freeze) positions in
    untradable assets."""
    orders_and_sells_nb(config, block, totals, rules, rows, A, B)
    if config[CONFIG.long_only] > 0.0:
        rescale_buys_nb(config, block, rules, rows, A, B)
    buys_and_closes_nb(config, block, totals, rules, rows, A, B)


@numba.njit(inline="always", **JIT)
def settle_phases_nb(config, block, rules, rows, A, B):
    """Steps 7-9 in their order: long/short, the intrabar margin check and liquidation; borrow and
    funding at the close and the mark to market; long/short, liquidation at the close. Expects
    ``TEMP.liquidate`` zeroed."""
    long_only = config[CONFIG.long_only] > 0.0
    if not long_only:
        intrabar_check_nb(config, block, rows, A, B)
        liquidate_nb(config, block, rules, rows, A, LIQUIDATE_INTRABAR, B)
    charges_and_mark_nb(config, block, rows, A, B)
    if not long_only:
        liquidate_nb(config, block, rules, rows, A, LIQUIDATE_AT_CLOSE, B)
