"""The fill rules of envs/execution.py ("Rounding rules", :func:`process_order`) at, just below and
just above each boundary, through the public scalar API (``process_order``, ``market_rules``,
``Slippage``). Every expected value is worked by hand in the comments, in numbers that are exact in
binary floating point wherever a rule says "below", "exceeds" or "rounds"."""

from __future__ import annotations

import math

import pytest

from factorgym.envs import ExecutionConfig
from factorgym.envs import execution as ex
from factorgym.envs.execution import Slippage, market_rules, process_order

from tests._engine_rules_data import act, env, tensor

NONE = Slippage(0.0, 0.0, 0.5)


def order(size, ref=100.0, cash=1000.0, position=0.0, inv_volume=0.0, rules=None, slip=NONE, exact=False,
          tradable=True):
    return process_order(cash, position, size, ref, inv_volume, rules or market_rules(), slip, exact, tradable)


# ---------------------------------------------------------------------- fees and the cash change
def test_a_buy_pays_quantity_times_price_plus_the_fee_and_a_sell_receives_it_less_the_fee():
    # buy 2 at 100, fee 1/1024: fee = 200/1024 = 0.1953125; cash 1000 - 200 - 0.1953125
    cash, pos, r = order(2.0, rules=market_rules(fee=1 / 1024))
    assert (r.status, r.quantity, r.price, r.fee, r.slippage_cost) == (ex.FILLED, 2.0, 100.0, 0.1953125, 0.0)
    assert (cash, pos) == (799.8046875, 2.0)
    # sell 2 of 3 held: +200 - 0.1953125, position 1
    cash, pos, r = order(-2.0, position=3.0, rules=market_rules(fee=1 / 1024))
    assert (r.status, r.quantity, r.fee) == (ex.FILLED, -2.0, 0.1953125)
    assert (cash, pos) == (1199.8046875, 1.0)


def test_a_zero_fee_charges_nothing_and_the_fee_is_on_the_fill_price_not_the_reference():
    cash, _, r = order(2.0, rules=market_rules(fee=0.0))
    assert r.fee == 0.0 and cash == 800.0
    # 1/8 slippage: buy at 112.5, fee 1/1024 of 2 x 112.5 = 225/1024
    cash, _, r = order(2.0, rules=market_rules(fee=1 / 1024), slip=Slippage(0.125, 0.0, 0.5))
    assert r.price == 112.5 and r.fee == 225 / 1024 and cash == 1000.0 - 225.0 - 225 / 1024


# ---------------------------------------------------------------------- slippage and impact
def test_fixed_slippage_moves_buys_up_and_sells_down_and_its_cost_is_quantity_times_the_gap():
    _, _, buy = order(4.0, slip=Slippage(0.25, 0.0, 0.5))
    _, _, sell = order(-4.0, position=4.0, slip=Slippage(0.25, 0.0, 0.5))
    assert (buy.price, buy.slippage_cost) == (125.0, 100.0)  # 100 x 1.25; 4 x 25
    assert (sell.price, sell.slippage_cost) == (75.0, 100.0)  # 100 x 0.75; 4 x 25


def test_square_root_impact_of_the_participation_in_the_bars_volume():
    # 4 units of a 64-unit bar: participation 1/16, sqrt 1/4, impact 0.5 x 1/4 = 1/8 -> buy at 112.5
    _, _, r = order(4.0, inv_volume=1 / 64, slip=Slippage(0.0, 0.5, 0.5))
    assert r.price == 112.5 and r.slippage_cost == 50.0
    # plus a fixed 1/16: 100 x (1 + 1/16 + 1/8) = 118.75
    _, _, r = order(4.0, inv_volume=1 / 64, slip=Slippage(1 / 16, 0.5, 0.5))
    assert r.price == 118.75


def test_a_general_impact_exponent_is_the_power_of_the_participation():
    # exponent 1: impact 0.5 x 1/16 = 1/32 -> sell at 100 x (1 - 1/32) = 96.875
    _, _, r = order(-4.0, position=4.0, inv_volume=1 / 64, slip=Slippage(0.0, 0.5, 1.0))
    assert r.price == 96.875
    # exponent 2: 0.5 x 1/256 -> buy at 100 x (1 + 1/512) = 100.1953125
    _, _, r = order(4.0, inv_volume=1 / 64, slip=Slippage(0.0, 0.5, 2.0))
    assert r.price == 100.1953125


@pytest.mark.parametrize("exponent", [0.5, 1.0, 2.0])
def test_an_unknown_volume_has_no_impact_term(exponent):
    _, _, r = order(4.0, inv_volume=0.0, slip=Slippage(1 / 16, 0.5, exponent))
    assert r.price == 106.25  # the fixed part alone


@pytest.mark.parametrize("fixed, buy, sell", [(0.5, 150.0, 50.0), (0.75, 150.0, 50.0), (0.375, 137.5, 62.5)])
def test_the_slippage_fraction_is_capped_at_one_half(fixed, buy, sell):
    assert order(1.0, slip=Slippage(fixed, 0.0, 0.5))[2].price == buy
    assert order(-1.0, position=1.0, slip=Slippage(fixed, 0.0, 0.5))[2].price == sell
    # the cap holds for the sum with the impact too: 0.25 fixed + 0.5 x sqrt(1) impact -> 0.5
    assert order(64.0, cash=1e9, inv_volume=1 / 64, slip=Slippage(0.25, 0.5, 0.5))[2].price == 150.0


# ---------------------------------------------------------------------- lot step
@pytest.mark.parametrize("size, want", [
    (0.75, 0.75),      # exactly 3 lots of 0.25
    (0.7499, 0.5),     # just below: rounded down, never up
    (0.76, 0.75),      # just above
    (0.25, 0.25),      # exactly one lot
    (1.0, 1.0),
])
def test_a_quantity_is_rounded_down_to_its_lot_step(size, want):
    _, pos, r = order(size, rules=market_rules(lot_step=0.25))
    assert r.status == ex.FILLED and r.quantity == want and pos == want
    _, pos, r = order(-size, position=5.0, rules=market_rules(lot_step=0.25))
    assert r.quantity == -want and pos == 5.0 - want  # sells round down (towards 0) as well


def test_round_off_below_a_whole_number_of_lots_is_absorbed():
    # 0.3 / 0.1 = 2.9999999999999996 in floating point: still 3 lots, not 2
    _, _, r = order(0.3, rules=market_rules(lot_step=0.1))
    assert r.quantity == pytest.approx(0.3, abs=1e-15)
    _, _, r = order(0.2999, rules=market_rules(lot_step=0.1))
    assert r.quantity == pytest.approx(0.2, abs=1e-15)


def test_an_order_that_rounds_to_no_lot_is_ignored_and_changes_nothing():
    cash, pos, r = order(0.2499, position=1.0, rules=market_rules(fee=0.01, lot_step=0.25))
    assert (r.status, r.quantity, r.price, r.fee, r.slippage_cost) == (ex.IGNORED_LOT, 0.0, 100.0, 0.0, 0.0)
    assert (cash, pos) == (1000.0, 1.0)


def test_a_lot_step_of_zero_does_not_round():
    _, _, r = order(0.123456789, rules=market_rules(lot_step=0.0))
    assert r.quantity == 0.123456789


def test_market_rules_store_the_reciprocals_of_the_steps_and_zero_for_no_step():
    r = market_rules(fee=0.001, lot_step=0.25, price_step=0.5)
    assert (r.inv_lot_step, r.inv_price_step) == (4.0, 2.0)
    assert (market_rules().inv_lot_step, market_rules().inv_price_step) == (0.0, 0.0)


# ---------------------------------------------------------------------- minimums
@pytest.mark.parametrize("size, status", [(0.5, ex.FILLED), (0.4999, ex.IGNORED_MIN_AMOUNT), (0.5001, ex.FILLED)])
def test_min_amount_is_met_at_exactly_the_minimum(size, status):
    cash, pos, r = order(size, rules=market_rules(min_amount=0.5))
    assert r.status == status
    filled = status == ex.FILLED
    assert pos == (size if filled else 0.0) and cash == (1000.0 - 100.0 * size if filled else 1000.0)


@pytest.mark.parametrize("size, status", [(0.5, ex.FILLED), (0.4999, ex.IGNORED_MIN_NOTIONAL), (0.5001, ex.FILLED)])
def test_min_notional_is_met_at_exactly_the_minimum_of_quantity_times_the_reference_price(size, status):
    # 0.5 x 100 = 50 = the minimum; (the fill price 150 with 1/2 slippage does not count)
    _, _, r = order(size, rules=market_rules(min_notional=50.0), slip=Slippage(0.5, 0.0, 0.5))
    assert r.status == status
    _, _, r = order(-size, position=1.0, rules=market_rules(min_notional=50.0), slip=Slippage(0.5, 0.0, 0.5))
    assert r.status == status  # (a sell at 50 is still 0.5 x 100 of notional)


def test_the_minimums_apply_to_the_lot_rounded_quantity():
    # 0.8 -> 0.75 (3 lots) meets min_amount 0.75 exactly; 0.99 -> 0.75 x 100 = 75 < min_notional 80
    assert order(0.8, rules=market_rules(lot_step=0.25, min_amount=0.75))[2].status == ex.FILLED
    assert order(0.99, rules=market_rules(lot_step=0.25, min_notional=80.0))[2].status == ex.IGNORED_MIN_NOTIONAL


@pytest.mark.parametrize("kw, size, status", [
    (dict(lot_step=0.25, min_amount=1.0, min_notional=1000.0), 0.1, ex.IGNORED_LOT),  # no lot beats both minimums
    (dict(min_amount=1.0, min_notional=1000.0), 0.5, ex.IGNORED_MIN_AMOUNT),  # the amount before the notional
    (dict(min_amount=0.25, min_notional=1000.0), 0.5, ex.IGNORED_MIN_NOTIONAL),
])
def test_the_first_failing_check_names_the_status(kw, size, status):
    assert order(size, rules=market_rules(**kw))[2].status == status


def test_an_order_of_zero_is_no_change_even_as_an_exact_close():
    for exact in (False, True):
        cash, pos, r = order(0.0, position=0.0, exact=exact, rules=market_rules(fee=0.01))
        assert (r.status, r.quantity, r.fee, cash, pos) == (ex.IGNORED_NO_CHANGE, 0.0, 0.0, 1000.0, 0.0)


def test_an_exact_close_skips_the_lot_and_the_minimums_and_leaves_exactly_zero():
    rules = market_rules(fee=1 / 1024, lot_step=0.25, min_amount=10.0, min_notional=1e6)
    cash, pos, r = order(-0.3, position=0.3, exact=True, rules=rules)
    assert r.status == ex.FILLED and r.quantity == -0.3 and pos == 0.0
    assert r.fee == 0.3 * 100.0 / 1024 and cash == 1000.0 + 30.0 - 0.3 * 100.0 / 1024
    # the same order not exact: rounded to 0.25 lots, then below the minimum amount
    assert order(-0.3, position=0.3, rules=rules)[2].status == ex.IGNORED_MIN_AMOUNT


# ---------------------------------------------------------------------- price step
@pytest.mark.parametrize("slip, buy, sell", [
    (0.001, 100.25, 99.75),   # 100.1 -> up to 100.25; 99.9 -> down to 99.75
    (0.0025, 100.25, 99.75),  # exactly on the step (100.25 / 99.75): kept, not moved a step further
    (0.0, 100.0, 100.0),
])
def test_fill_prices_are_rounded_to_the_price_step_against_the_trader(slip, buy, sell):
    rules = market_rules(fee=1 / 1024, price_step=0.25)
    _, _, b = order(4.0, rules=rules, slip=Slippage(slip, 0.0, 0.5))
    _, _, s = order(-4.0, position=4.0, rules=rules, slip=Slippage(slip, 0.0, 0.5))
    assert b.price == buy and s.price == sell
    # fee and slippage cost on the rounded price
    assert b.fee == 4 * buy / 1024 and b.slippage_cost == 4 * (buy - 100.0)
    assert s.slippage_cost == 4 * (100.0 - sell)


# ---------------------------------------------------------------------- untradable
def test_an_untradable_order_is_rejected_with_nothing_filled():
    cash, pos, r = order(2.0, position=1.0, tradable=False, rules=market_rules(fee=0.01), slip=Slippage(0.1, 0.0, 0.5))
    assert (r.status, r.quantity, r.price, r.fee, r.slippage_cost) == (ex.REJECTED_UNTRADABLE, 0.0, 100.0, 0.0, 0.0)
    assert (cash, pos) == (1000.0, 1.0)
    assert ex.ORDER_STATUS[r.status] == "rejected_untradable"


@pytest.mark.parametrize("size, rules, status", [
    (0.1, market_rules(lot_step=0.25), ex.IGNORED_LOT),
    (0.3, market_rules(min_amount=0.5), ex.IGNORED_MIN_AMOUNT),
    (0.3, market_rules(min_notional=50.0), ex.IGNORED_MIN_NOTIONAL),
])
def test_ignored_orders_report_the_reference_price_and_no_costs(size, rules, status):
    cash, pos, r = order(size, rules=rules, slip=Slippage(0.25, 0.0, 0.5))
    got = (r.status, r.quantity, r.price, r.fee, r.slippage_cost, cash, pos)
    assert got == (status, 0.0, 100.0, 0.0, 0.0, 1000.0, 0.0)


def test_status_names_follow_the_codes():
    assert [ex.ORDER_STATUS[c] for c in (ex.FILLED, ex.IGNORED_NO_CHANGE, ex.IGNORED_LOT, ex.IGNORED_MIN_AMOUNT,
                                         ex.IGNORED_MIN_NOTIONAL, ex.REJECTED_UNTRADABLE)] == \
        ["filled", "ignored_no_change", "ignored_lot", "ignored_min_amount", "ignored_min_notional",
         "rejected_untradable"]
    assert math.log(ex.LOG_FLOOR) == pytest.approx(-27.631021, abs=1e-6)


# ------------------------------------------------- per-symbol rules: config > tensor meta > default
@pytest.mark.parametrize("cfg, fee, qty", [
    (dict(), 1 / 512, 4.75),                                  # from meta: fee 1/512, lot 0.25 (4.98 -> 4.75)
    (dict(taker_fee=1 / 1024), 1 / 1024, 4.75),               # the config's fee over the meta's
    (dict(taker_fee={"X": 1 / 256, "Y": 0.0}, lot_step=0.0), 1 / 256, 4.98),
    (dict(use_market_rules=False), 0.001, 4.98),              # meta ignored: the default 10 bps, no lot
])
def test_per_symbol_rules_come_from_the_config_then_the_tensor_meta_then_the_default(cfg, fee, qty):
    t = tensor([[100.0, 50.0]] * 3)
    t.meta["market_rules"] = {"X": {"symbol": "X", "taker_fee": 1 / 512, "amount_step": 0.25}}
    base = dict(slippage_bps=0.0, half_spread_bps=0.0, impact_coef=0.0, max_leverage=1.0)
    e = env(t, ExecutionConfig(**{**base, **cfg}), long_only=True)
    _, _, _, _, info = e.step(act(0.498, 0.0))  # 4.98 X at 100
    (trade,) = info["trades"]
    assert trade["quantity"] == pytest.approx(qty, abs=1e-12)
    assert trade["fee"] == pytest.approx(qty * 100 * fee, rel=1e-12)


def test_each_of_three_symbols_fills_under_its_own_rules():
    # lot / price step / min amount / fee per symbol; slippage 1/64: X 100 -> 101.5625 -> step 0.25 up:
    # 101.75; Y 50 -> 50.78125 -> step 0.5: 51.0; Z 10 -> 10.15625 -> step 1: 11.0. Targets 0.299 of 1000:
    # X 2.99 -> lot 0.25: 2.75 (275 >= X's minimum notional 250); Y 5.98 -> lot 0.5: 5.5; Z 29.9 -> lot 1:
    # 29, exactly Z's minimum amount
    t = tensor([[100.0, 50.0, 10.0]] * 3)
    cfg = ExecutionConfig.frictionless(
        max_leverage=3.0, maintenance_margin=0.0, slippage_bps=156.25,
        taker_fee={"X": 1 / 1024, "Y": 1 / 512, "Z": 1 / 256}, lot_step={"X": 0.25, "Y": 0.5, "Z": 1.0},
        price_step={"X": 0.25, "Y": 0.5, "Z": 1.0}, min_amount={"X": 0.0, "Y": 0.0, "Z": 29.0},
        min_notional={"X": 250.0, "Y": 0.0, "Z": 0.0})
    e = env(t, cfg)
    _, _, _, _, info = e.step(act(0.299, 0.299, 0.299))
    got = [(x["symbol"], x["quantity"], x["price"], x["fee"]) for x in info["trades"]]
    assert got == [("X", 2.75, 101.75, 2.75 * 101.75 / 1024), ("Y", 5.5, 51.0, 5.5 * 51.0 / 512),
                   ("Z", 29.0, 11.0, 29.0 * 11.0 / 256)]
    # X 0.2 -> 2 X x 100 = 200 < 250; Y 0.025 -> 0.5 Y, one lot, no minimum for Y; Z 0.289 -> 28 < 29
    e = env(t, cfg)
    _, _, _, _, info = e.step(act(0.2, 0.025, 0.289))
    assert e.order_status == ["ignored_min_notional", "filled", "ignored_min_amount"]
    assert [(x["symbol"], x["quantity"]) for x in info["trades"]] == [("Y", 0.5)]


@pytest.mark.parametrize("cash, cost, want", [
    (1000.0, 500.0, 1.0),                        # the cash suffices: unscaled
    (1000.0, 1000.0, 1.0),                       # exactly the cash: unscaled (scaled only when it exceeds)
    (1000.0, 0.0, 1.0),                          # nothing planned
    (1000.0, 4000.0, 0.25 * (1 - 1e-12)),        # cash / cost less a margin of 1e-12
    (0.5, 0.5 * 1025 / 1024, 1024 / 1025 * (1 - 1e-12)),  # below one quote unit as well
    (-10.0, 5.0, 0.0),                           # no cash (a negative cash counts as none)
])
def test_the_long_only_buy_scale(cash, cost, want):
    assert ex.buy_scale_nb(cash, cost) == pytest.approx(want, rel=1e-15, abs=0.0)
