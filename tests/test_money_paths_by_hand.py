"""Short, untradable close and liquidation worked by hand WITH fees and slippage (10 bps taker fee,
10 bps slippage, 10 bps of borrow per bar); turnover against traded notional / OPENING equity;
shorts checked by value. The numbers are derived in the comments, independently of the engine."""

from __future__ import annotations

import math

import numpy as np
import pytest

from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs import CryptoTradingEnv, ExecutionConfig

HOUR = 3_600_000
NAN = float("nan")
# bar:        0            1            2             3
OPEN = [[100.0, 50.0], [100.0, 50.0], [NAN, 50.0], [110.0, 60.0], [110.0, 60.0]]
CLOSE = [[100.0, 50.0], [110.0, 50.0], [NAN, 60.0], [110.0, 130.0], [110.0, 130.0]]
TRADABLE = [[True, True], [True, True], [False, True], [True, True], [True, True]]
CFG = ExecutionConfig(taker_fee=0.001, slippage_bps=10.0, half_spread_bps=0.0, impact_coef=0.0, lot_step=0.0,
                      min_amount=0.0, min_notional=0.0, price_step=0.0, borrow_rate_per_bar=0.001, max_leverage=2.0,
                      maintenance_margin=0.25, on_untradable="close", use_market_rules=False)


def env() -> CryptoTradingEnv:
    o, c = np.array(OPEN), np.array(CLOSE)
    prices = np.stack([o, np.fmax(o, c), np.fmin(o, c), c, np.full(o.shape, 1000.0)], axis=-1)
    t = FactorTensor.from_arrays(np.zeros((5, 2, 1)), prices, np.arange(5) * HOUR, symbols=["X", "Y"],
                                 tradable=np.array(TRADABLE))
    e = CryptoTradingEnv(t, mapping="direct", long_only=False, execution=CFG, initial_cash=1000.0, random_start=False)
    e.reset(options={"start": 0})
    return e


def trades(info):
    return [(t["symbol"], t["side"], t["kind"], t["quantity"], t["price"], t["fee"], t["slippage_cost"]) for t in info["trades"]]


def assert_trades(info, want):
    got = trades(info)
    assert [g[:3] for g in got] == [w[:3] for w in want], got
    for g, w in zip(got, want):
        assert g[3:] == pytest.approx(w[3:], abs=1e-12), (g, w)


def test_short_untradable_close_and_liquidation_with_fees_and_slippage():
    e = env()
    # step 1 (fills at bar 1's open, E_open = 1000): X +50% -> buy 5 at 100 x 1.001 = 100.1 (fee 0.5005);
    # Y -50% -> sell 10 at 50 x 0.999 = 49.95 (proceeds 499.5, fee 0.4995). Sells first:
    # cash 1000 + 499.5 - 0.4995 - 500.5 - 0.5005 = 998.0; borrow 0.001 x (10 x 50) = 0.5 -> cash 997.5;
    # equity 997.5 + 5 x 110 - 10 x 50 = 1047.5
    _, reward, term, trunc, info = e.step(np.array([0.5, -0.5], np.float32))
    assert info["positions"][0] == pytest.approx(5.0, abs=1e-12) and info["positions"][1] == pytest.approx(-10.0, abs=1e-12)
    assert info["cash"] == pytest.approx(997.5, abs=1e-9) and info["equity"] == pytest.approx(1047.5, abs=1e-9)
    assert info["borrow_cost"] == pytest.approx(0.5, abs=1e-12)
    assert info["fees"] == pytest.approx(1.0, abs=1e-12) and info["slippage_cost"] == pytest.approx(1.0, abs=1e-12)
    assert info["turnover"] == pytest.approx(1000.0 / 1000.0, abs=1e-12)  # (500.5 + 499.5) / E_open 1000
    assert info["weights"] == pytest.approx([550 / 1047.5, -500 / 1047.5], abs=1e-12)  # a short by value
    assert reward == pytest.approx(math.log(1047.5 / 1000), abs=1e-12)
    assert_trades(info, [("Y", "sell", "order", 10.0, 49.95, 0.4995, 0.5),
                                          ("X", "buy", "order", 5.0, 100.1, 0.5005, 0.5)])
    # step 2 (bar 2: X does not trade): X's order is rejected and the position closed at its last
    # close 110 with the fee, no slippage: +550 - 0.55; Y held (NaN). E_open = 997.5 + 550 - 500 = 1047.5.
    # borrow 0.001 x 10 x 60 = 0.6: cash 997.5 + 549.45 - 0.6 = 1546.35; equity 1546.35 - 600 = 946.35
    _, reward, term, trunc, info = e.step(np.array([0.5, np.nan], np.float32))
    assert e.order_status == ["rejected_untradable", "ignored_no_change"]
    assert_trades(info, [("X", "sell", "untradable_close", 5.0, 110.0, 0.55, 0.0)])
    assert info["cash"] == pytest.approx(1546.35, abs=1e-9) and info["equity"] == pytest.approx(946.35, abs=1e-9)
    assert info["fees"] == pytest.approx(0.55, abs=1e-12) and info["slippage_cost"] == 0.0
    assert info["borrow_cost"] == pytest.approx(0.6, abs=1e-12)
    assert info["turnover"] == pytest.approx(550 / 1047.5, abs=1e-12)  # over the OPENING equity, not 946.35
    assert list(info["positions"]) == pytest.approx([0.0, -10.0], abs=1e-12)
    assert not (term or trunc)
    # step 3 (bar 3): Y opens at 60 and reaches 130 (its high, adverse for a short): at 130 the book is
    # 1546.35 - 1300 = 246.35 < 0.25 x 1300 = 325, so it is liquidated intrabar at the price P* where
    # 1546.35 - 10 P* = 0.25 x 10 P*: P* = 1546.35 / 12.5 = 123.708; Y covered at 123.708 x 1.001 =
    # 123.831708 (1238.31708, fee 1.23831708, slippage 1.23708); no close charges (no borrow) after it
    # -> cash = equity = 1546.35 - 1238.31708 - 1.23831708 = 306.79460292; E_open = 1546.35 - 600 = 946.35
    _, reward, term, trunc, info = e.step(np.array([0.0, np.nan], np.float32))
    assert term and not trunc and info["status"] == "liquidated"
    assert_trades(info, [("Y", "buy", "liquidation", 10.0, 123.831708, 1.23831708, 1.23708)])
    assert info["equity"] == pytest.approx(306.79460292, abs=1e-9) and info["cash"] == pytest.approx(306.79460292, abs=1e-9)
    assert info["fees"] == pytest.approx(1.23831708, abs=1e-12) and info["slippage_cost"] == pytest.approx(1.23708, abs=1e-9)
    assert info["borrow_cost"] == 0.0
    assert info["turnover"] == pytest.approx(1238.31708 / 946.35, abs=1e-12)
    assert list(info["positions"]) == [0.0, 0.0]
    assert reward == pytest.approx(math.log(306.79460292 / 946.35), abs=1e-12)


def test_freeze_keeps_an_untradable_position_at_its_last_close_without_a_fill():
    cfg = ExecutionConfig(**{**CFG.__dict__, "on_untradable": "freeze"})
    o, c = np.array(OPEN), np.array(CLOSE)
    prices = np.stack([o, np.fmax(o, c), np.fmin(o, c), c, np.full(o.shape, 1000.0)], axis=-1)
    t = FactorTensor.from_arrays(np.zeros((5, 2, 1)), prices, np.arange(5) * HOUR, symbols=["X", "Y"],
                                 tradable=np.array(TRADABLE))
    e = CryptoTradingEnv(t, mapping="direct", long_only=False, execution=cfg, initial_cash=1000.0, random_start=False)
    e.reset(options={"start": 0})
    e.step(np.array([0.5, -0.5], np.float32))
    _, _, _, _, info = e.step(np.array([0.0, np.nan], np.float32))  # X: a close asked for, untradable: rejected
    assert e.order_status[0] == "rejected_untradable" and trades(info) == []
    # X frozen at 110: cash 997.5 - 0.6 (borrow on 10 x 60) = 996.9; equity 996.9 + 550 - 600 = 946.9
    assert list(info["positions"]) == pytest.approx([5.0, -10.0], abs=1e-12)
    assert info["equity"] == pytest.approx(946.9, abs=1e-9) and info["turnover"] == 0.0 and info["fees"] == 0.0
