"""Steps 7-9 of envs/execution.py's order of operations and the env-level price settings, worked by
hand: liquidation at the open on a gap, liquidation at the close when the bar's charges tip the
margin, turnover over the equity at the OPEN, fixed slippage as slippage_bps + half_spread_bps, and
impact on the fill bar's volume."""

from __future__ import annotations

import math

import pytest

from factorgym.envs import ExecutionConfig

from tests._engine_rules_data import act, env, tensor

NAN = float("nan")


def trades(info):
    return [(t["symbol"], t["side"], t["kind"], t["quantity"], t["price"]) for t in info["trades"]]


def test_a_book_already_breached_at_the_open_is_liquidated_at_the_open():
    # short 20 X at 50 (cash 2000), maintenance 0.25; X gaps to open 90 (high 95): at the open the
    # equity 2000 - 1800 = 200 < 0.25 x 1800 = 450: closed at the open itself, 20 bought at 90
    o = [[50.0, 50.0], [50.0, 50.0], [90.0, 50.0], [90.0, 50.0]]
    high = [[50.0, 50.0], [50.0, 50.0], [95.0, 50.0], [90.0, 50.0]]
    c = [[50.0, 50.0], [50.0, 50.0], [92.0, 50.0], [90.0, 50.0]]
    e = env(tensor(o, c, high=high), ExecutionConfig.frictionless(max_leverage=2.0, maintenance_margin=0.25))
    e.step(act(-1.0, 0.0))
    _, reward, term, _, info = e.step(act(NAN, NAN))
    assert info["status"] == "liquidated" and term
    assert trades(info) == [("X", "buy", "liquidation", 20.0, 90.0)]
    assert info["cash"] == 200.0 and info["equity"] == 200.0 and list(info["positions"]) == [0.0, 0.0]
    assert reward == pytest.approx(math.log(200 / 1000), abs=1e-12)
    assert info["turnover"] == 1800 / 200  # traded 1800 over the equity at the open, 200


def test_borrow_that_tips_the_margin_at_the_close_liquidates_at_the_close():
    # short 20 X at 50 (cash 2000), maintenance 0.25, borrow 1/1024 a bar: bar 1 charges 20 x 50 / 1024,
    # cash 1999.0234375. Bar 2 trades up to P = 1999.0234375 / 25 = 79.9609375 and closes there: at
    # that extreme 1999.0234375 - 20 P = 0.25 x 20 P exactly, no breach (liquidation is for *below*);
    # the close's borrow 20 P / 1024 then leaves the equity below 0.25 x 20 P: bought back at the close
    P = 79.9609375
    o = [[50.0, 50.0], [50.0, 50.0], [50.0, 50.0], [P, 50.0]]
    c = [[50.0, 50.0], [50.0, 50.0], [P, 50.0], [P, 50.0]]
    cfg = ExecutionConfig.frictionless(max_leverage=2.0, maintenance_margin=0.25, borrow_rate_per_bar=1 / 1024)
    e = env(tensor(o, c), cfg)
    _, _, _, _, info = e.step(act(-1.0, 0.0))
    cash = 2000.0 - 1000 / 1024
    assert info["borrow_cost"] == 1000 / 1024 and info["status"] == "ok" and info["cash"] == cash == 1999.0234375
    _, _, term, _, info = e.step(act(NAN, NAN))
    assert info["status"] == "liquidated" and term
    assert info["borrow_cost"] == 20 * P / 1024
    assert trades(info) == [("X", "buy", "liquidation", 20.0, P)]
    assert info["cash"] == cash - 20 * P / 1024 - 20 * P and info["equity"] == info["cash"]


def test_funding_that_tips_the_margin_at_the_close_liquidates_at_the_close():
    # short 20 X at 50 (cash 2000), maintenance 0.25; bar 2 trades up to 80 and closes there: at the
    # extreme 2000 - 1600 = 400 = 0.25 x 1600, no breach; a funding rate of -1/1024 (shorts pay)
    # charges 1600 / 1024 = 1.5625 at the close: 398.4375 < 400, bought back at 80: cash 398.4375
    o = [[50.0, 50.0], [50.0, 50.0], [50.0, 50.0], [80.0, 50.0]]
    c = [[50.0, 50.0], [50.0, 50.0], [80.0, 50.0], [80.0, 50.0]]
    funding = [[0.0, 0.0], [0.0, 0.0], [-1 / 1024, 0.0], [0.0, 0.0]]
    e = env(tensor(o, c, funding=funding), ExecutionConfig.frictionless(max_leverage=2.0, maintenance_margin=0.25))
    e.step(act(-1.0, 0.0))
    _, _, term, _, info = e.step(act(NAN, NAN))
    assert info["status"] == "liquidated" and term
    assert info["funding"] == 1.5625 and trades(info) == [("X", "buy", "liquidation", 20.0, 80.0)]
    assert info["cash"] == 398.4375 and info["equity"] == 398.4375


def test_without_the_charge_the_same_bar_is_no_breach():
    o = [[50.0, 50.0], [50.0, 50.0], [50.0, 50.0], [80.0, 50.0]]
    c = [[50.0, 50.0], [50.0, 50.0], [80.0, 50.0], [80.0, 50.0]]
    e = env(tensor(o, c), ExecutionConfig.frictionless(max_leverage=2.0, maintenance_margin=0.25))
    e.step(act(-1.0, 0.0))
    _, _, term, _, info = e.step(act(NAN, NAN))
    assert info["status"] == "ok" and not term and info["equity"] == 400.0


def test_turnover_is_traded_value_over_the_equity_at_the_open_of_the_fill_bar():
    # 10 X at 100; X closes bar 1 at 120 (E 1200) and opens bar 2 at 125 (E_open 1250): to 50% ->
    # target 0.5 x 1250 / 125 = 5: sell 5 at 125 = 625; turnover 625 / 1250 = 0.5 (not / 1200, not
    # / the close's 625 + 5 x 130 = 1275)
    o = [[100.0, 50.0], [100.0, 50.0], [125.0, 50.0], [130.0, 50.0]]
    c = [[100.0, 50.0], [120.0, 50.0], [130.0, 50.0], [130.0, 50.0]]
    e = env(tensor(o, c), long_only=True)
    _, _, _, _, info = e.step(act(1.0, 0.0))
    assert info["turnover"] == 1.0 and info["equity"] == 1200.0
    _, _, _, _, info = e.step(act(0.5, 0.0))
    assert trades(info) == [("X", "sell", "order", 5.0, 125.0)]
    assert info["turnover"] == 0.5 and info["equity"] == 1275.0


@pytest.mark.parametrize("bps, half, price", [(5.0, 7.5, 100.125), (0.0, 12.5, 100.125), (12.5, 0.0, 100.125),
                                              (0.0, 0.0, 100.0)])
def test_the_fixed_slippage_is_slippage_bps_plus_half_spread_bps(bps, half, price):
    cfg = ExecutionConfig.frictionless(slippage_bps=bps, half_spread_bps=half, max_leverage=1.0)
    e = env(tensor([[100.0, 50.0]] * 3), cfg, long_only=True)
    _, _, _, _, info = e.step(act(0.5, 0.0))
    # 5 X at 100 x (1 + 12.5e-4) unless free; slippage cost 5 x 0.125
    q = 500 / 100
    assert info["trades"][0]["price"] == pytest.approx(price, abs=1e-12)
    assert info["slippage_cost"] == pytest.approx(q * (price - 100.0), abs=1e-12)


@pytest.mark.parametrize("volume, price", [(80.0, 112.5), (0.0, 100.0)])
def test_impact_grows_with_the_square_root_of_the_participation_in_the_fill_bars_volume(volume, price):
    # 5 X of an 80-unit bar: participation 1/16, sqrt 1/4, x 0.5 = 1/8 -> 112.5; a bar of volume 0
    # (unknown) has no impact term. Long-only: 5 X x 112.5 = 562.5 <= the 1000 of cash, no scaling
    v = [[1000.0, 1000.0], [volume, 1000.0], [1000.0, 1000.0]]
    cfg = ExecutionConfig.frictionless(impact_coef=0.5, impact_exponent=0.5, max_leverage=1.0)
    e = env(tensor([[100.0, 50.0]] * 3, volume=v), cfg, long_only=True)
    _, _, _, _, info = e.step(act(0.5, 0.0))
    assert trades(info) == [("X", "buy", "order", 5.0, price)]


def test_an_intrabar_breach_is_liquidated_where_the_line_from_the_open_to_the_extreme_meets_the_margin():
    # short 20 X at 50 (cash 2000), maintenance 0.25. Bar 2 opens at 60, trades up to 100, closes at 70.
    # Surplus at the open: 2000 - 1200 - 0.25 x 1200 = 500; at the high: 0 - 0.25 x 2000 = -500: the
    # surplus is 0 halfway, at 60 + 0.5 x 40 = 80 (2000 - 1600 = 400 = 0.25 x 1600): 20 bought at 80
    o = [[50.0, 50.0], [50.0, 50.0], [60.0, 50.0], [70.0, 50.0]]
    high = [[50.0, 50.0], [50.0, 50.0], [100.0, 50.0], [70.0, 50.0]]
    c = [[50.0, 50.0], [50.0, 50.0], [70.0, 50.0], [70.0, 50.0]]
    e = env(tensor(o, c, high=high), ExecutionConfig.frictionless(max_leverage=2.0, maintenance_margin=0.25))
    e.step(act(-1.0, 0.0))
    _, _, term, _, info = e.step(act(NAN, NAN))
    assert info["status"] == "liquidated" and term
    assert trades(info) == [("X", "buy", "liquidation", 20.0, 80.0)]
    assert info["cash"] == 400.0 and info["equity"] == 400.0


@pytest.mark.parametrize("w, q", [((0.1, -0.02), (1.0, -0.4)), ((0.1, 0.05), (1.0, 1.0)), ((0.0, -0.05), (0.0, -1.0))])
def test_the_close_marks_every_position_to_market_single_units_included(w, q):
    # positions of exactly 1 and -1 unit (0.1 x 1000 / 100 = 1 X; 0.05 x 1000 / 50 = 1 Y); closes
    # X 120, Y 40: equity = cash + sum(q x close), cash = 1000 - sum(q x open)
    o = [[100.0, 50.0], [100.0, 50.0], [120.0, 40.0]]
    c = [[100.0, 50.0], [120.0, 40.0], [120.0, 40.0]]
    e = env(tensor(o, c), ExecutionConfig.frictionless(max_leverage=2.0, maintenance_margin=0.0))
    _, _, _, _, info = e.step(act(*w))
    assert list(info["positions"]) == pytest.approx(list(q), abs=1e-12)
    cash = 1000.0 - q[0] * 100 - q[1] * 50
    assert info["cash"] == pytest.approx(cash, abs=1e-9)
    assert info["equity"] == pytest.approx(cash + q[0] * 120 + q[1] * 40, abs=1e-9)


def test_an_env_whose_action_is_refused_pays_no_borrow_or_funding_for_that_step():
    # short 10 Y at 50 (cash 1500), borrow 1/1024 a bar, funding -1/512 (shorts pay) on every bar:
    # bar 1 charges 500/1024 + 500/512. A refused (NaN) action moves nothing: no bar, no charges;
    # the next valid step charges bar 2's once: cash 1500 - 2 x (500/1024 + 1000/1024)
    funding = [[0.0, -1 / 512]] * 4
    cfg = ExecutionConfig.frictionless(max_leverage=2.0, maintenance_margin=0.0, borrow_rate_per_bar=1 / 1024)
    e = env(tensor([[100.0, 50.0]] * 4, funding=funding), cfg, mapping="signed")
    _, _, _, _, info = e.step(act(0.0, -0.25))
    assert info["borrow_cost"] == 500 / 1024 and info["funding"] == 1000 / 1024
    assert info["cash"] == 1500.0 - 1500 / 1024
    with pytest.raises(ValueError, match="not in the action space"):
        e.step(act(NAN, 0.0))
    assert e.core.state[0, 0] == 1500.0 - 1500 / 1024 and e.core.counters[0, 0] == 1
    _, _, _, _, info = e.step(act(0.0, -0.25 * 1000 / (1000 - 1500 / 1024)))  # (the same 10 Y short)
    assert info["cash"] == pytest.approx(1500.0 - 3000 / 1024, abs=1e-9) and info["timestamp"] == 2 * 3_600_000
