"""``process_order`` called from plain Python gives exactly the env's fills, and its parts by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs import CryptoTradingEnv, ExecutionConfig
from factorgym.envs import execution as ex

HOUR = 3_600_000


def one_asset_env(open_, close, volume, rules: dict, fixed_bps: float, impact: float, exponent: float,
                  long_only: bool) -> CryptoTradingEnv:
    T = len(open_)
    prices = np.stack([open_, np.maximum(open_, close), np.minimum(open_, close), close, volume], axis=-1)[:, None, :]
    tensor = FactorTensor.from_arrays(np.zeros((T, 1, 1)), prices, np.arange(T) * HOUR, symbols=["X/USDT"])
    cfg = ExecutionConfig(taker_fee=rules["fee"], lot_step=rules["lot_step"], min_amount=rules["min_amount"],
                          min_notional=rules["min_notional"], price_step=rules["price_step"], slippage_bps=fixed_bps,
                          half_spread_bps=0.0, impact_coef=impact, impact_exponent=exponent, max_leverage=3.0,
                          maintenance_margin=0.0, use_market_rules=False)
    return CryptoTradingEnv(tensor, mapping="direct", long_only=long_only, execution=cfg, random_start=False,
                            initial_cash=1000.0)


def env_order(cash: float, position: float, weight: float, price: float) -> tuple[float, bool]:
    """The order the env sends for a target weight (steps 2-3 of execution.py, in plain Python)."""
    equity_open = cash + (position * price if position != 0.0 else 0.0)
    target = weight * equity_open / price if equity_open > 0.0 else 0.0
    size = target - position
    if abs(size) <= ex.NOISE * max(abs(target), abs(position)):
        size = 0.0
    if weight == 0.0:
        return -position, True
    return size, False


rule_values = st.fixed_dictionaries({
    "fee": st.sampled_from([0.0, 0.0004, 0.001, 0.0075]),
    "lot_step": st.sampled_from([0.0, 0.001, 0.01, 0.1, 1.0]),
    "min_amount": st.sampled_from([0.0, 0.05, 2.0]),
    "min_notional": st.sampled_from([0.0, 5.0, 100.0]),
    "price_step": st.sampled_from([0.0, 0.01, 0.5]),
})
weights = st.one_of(st.just(0.0), st.floats(-2.5, 2.5, allow_nan=False), st.sampled_from([1.0, -1.0, 0.3]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=rule_values, fixed_bps=st.sampled_from([0.0, 1.0, 25.0]), impact=st.sampled_from([0.0, 0.02, 0.3]),
       exponent=st.sampled_from([0.5, 0.7, 1.0]), long_only=st.booleans(),
       opens=st.lists(st.floats(1.0, 5000.0), min_size=4, max_size=4),
       volumes=st.lists(st.sampled_from([0.0, 3.0, 250.0, 1e6]), min_size=4, max_size=4),
       targets=st.lists(weights, min_size=3, max_size=3))
def test_random_orders_fill_alike_through_process_order_and_through_the_env(rules, fixed_bps, impact, exponent,
                                                                             long_only, opens, volumes, targets):
    open_ = np.asarray(opens)
    env = one_asset_env(open_, open_ * 1.01, np.asarray(volumes), rules, fixed_bps, impact, exponent, long_only)
    env.reset()
    market = ex.market_rules(**rules)
    slippage = ex.Slippage(fixed_bps / 1e4, impact, exponent)
    cash, position = 1000.0, 0.0
    for k, w in enumerate(targets, start=1):
        w = min(max(w, 0.0), 1.0) if long_only else w  # (the env's clip; |w| <= 3 = max_leverage)
        size, exact = env_order(cash, position, w, opens[k])
        inv_volume = 1.0 / volumes[k] if volumes[k] > 0 else 0.0
        new_cash, new_position, fill = ex.process_order(cash, position, size, opens[k], inv_volume, market, slippage,
                                                        exact, True)
        if long_only and size > 0 and abs(fill.quantity) * fill.price + fill.fee > cash:
            return  # (the env would scale this buy to the cash: another path, checked elsewhere)
        _, _, terminated, _, info = env.step(np.array([w]))
        if info["status"] == "liquidated":  # (a fill so costly that the margin is gone: closed after it)
            return
        assert ex.ORDER_STATUS[fill.status] == env.order_status[0] or size == 0.0
        trades = info["trades"]
        if fill.status == ex.FILLED:
            (trade,) = trades
            assert (trade["side"] == "buy") == (fill.quantity > 0)
            assert (trade["quantity"], trade["price"], trade["fee"], trade["slippage_cost"]) == \
                (abs(fill.quantity), fill.price, fill.fee, fill.slippage_cost)
        else:
            assert trades == []
        assert info["positions"][0] == new_position and info["cash"] == new_cash  # bit for bit
        cash, position = new_cash, new_position
        if terminated:
            return


def test_process_order_by_hand():
    rules = ex.market_rules(fee=0.001, lot_step=0.01, min_notional=10.0, price_step=0.05)
    slip = ex.Slippage(fixed=5e-4, impact=0.1, impact_exponent=0.5)
    # buy 4.005 -> 4.00 lots; impact 0.1 x sqrt(4 / 400) = 0.01; price 100 x 1.0105 = 101.05 (on the 0.05 grid)
    cash, pos, fill = ex.process_order(1000.0, 0.0, 4.005, 100.0, 1 / 400, rules, slip)
    assert fill.status == ex.FILLED and fill.quantity == pytest.approx(4.0) and fill.price == pytest.approx(101.05)
    assert fill.fee == pytest.approx(4 * 101.05 * 0.001) and fill.slippage_cost == pytest.approx(4 * 1.05)
    assert cash == pytest.approx(1000 - 4 * 101.05 * 1.001) and pos == pytest.approx(4.0)
    # a sell of 0.05 (5 USD) is below the 10 USD minimum: ignored, nothing changes
    assert ex.process_order(cash, pos, -0.05, 100.0, 0.0, rules, slip) == (cash, pos, (ex.IGNORED_MIN_NOTIONAL, -0.0,
                                                                                         100.0, 0.0, 0.0))
    # an exact close ignores lots and minimums; an untradable bar rejects
    c2, p2, f2 = ex.process_order(cash, 0.003, -0.003, 100.0, 0.0, rules, slip, exact=True)
    assert f2.status == ex.FILLED and p2 == 0.0 and f2.quantity == -0.003
    _, p3, f3 = ex.process_order(cash, pos, 1.0, 100.0, 0.0, rules, slip, tradable=False)
    assert f3.status == ex.REJECTED_UNTRADABLE and p3 == pos and f3.quantity == 0.0


def test_charges_and_liquidation_point_by_hand():
    assert ex.borrow_charge_nb(0.001, 3000.0, -500.0) == pytest.approx(3.5)
    assert ex.funding_charge_nb(0.0001, -2.0, 30_000.0) == pytest.approx(-6.0)  # a short receives
    assert ex.buy_scale_nb(100.0, 50.0) == 1.0 and ex.buy_scale_nb(100.0, 200.0) == pytest.approx(0.5 * (1 - 1e-12))
    # surplus 700 at the open, -290 at the extreme: breached 700 / 990 of the way
    assert ex.liquidation_point_nb(700.0, -290.0) == pytest.approx(700 / 990)
    assert ex.liquidation_point_nb(-5.0, -290.0) == 0.0  # already breached at the open (a gap)
    assert math.isclose(ex.margin_surplus_nb(1000.0, 3000.0, 0.1), 700.0)


@pytest.mark.parametrize("position", [2.5, -0.75, 0.0])
def test_the_forced_close_is_an_exact_order_without_slippage(position):
    no_slippage = ex.Slippage(0.0, 0.0, 0.5)
    rules = ex.market_rules(fee=0.001)
    general = ex.process_order(100.0, position, -position, 37.5, 0.01, rules, no_slippage, True)[2]
    assert tuple(ex.close_at_mark_nb(position, 37.5, 0.001)) == tuple(general)
