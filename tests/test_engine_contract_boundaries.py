"""The engine's documented rules at their exact boundaries (envs/execution.py, "Order of operations"),
with values worked by hand in exactly representable numbers: a rule that says "below" or "exceeds"
must not fire at equality."""

from __future__ import annotations

import numpy as np

from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs import CryptoTradingEnv, ExecutionConfig


def _env(open_, high, close, cfg, long_only=False) -> CryptoTradingEnv:
    o, h, c = (np.array(x, float) for x in (open_, high, close))
    prices = np.stack([o, h, np.fmin(o, c), c, np.full(o.shape, 1000.0)], axis=-1)
    t = FactorTensor.from_arrays(np.zeros((len(o), 2, 1)), prices, np.arange(len(o)) * 3_600_000, symbols=["X", "Y"])
    e = CryptoTradingEnv(t, mapping="direct", long_only=long_only, execution=cfg, initial_cash=1000.0,
                         random_start=False)
    e.reset(options={"start": 0})
    return e


def test_a_margin_exactly_at_maintenance_at_the_extreme_and_at_the_close_is_no_breach():
    """No fees, maintenance 0.25. Bar 1's open: -100% Y sells 20 Y at 50, cash 2000. Bar 2 opens at 50
    and trades up to 80, where it closes: equity 2000 - 20 x 80 = 400 = 0.25 x 1600, a surplus of
    exactly 0. Liquidation is for equity *below* the maintenance (step 7 intrabar, step 9 at the
    close): the short is kept, status ok, equity 400. (At 80.02 it is liquidated:
    test_mutants_s10.py.)"""
    cfg = ExecutionConfig.frictionless(max_leverage=2.0, maintenance_margin=0.25)
    o = [[100.0, 50.0]] * 4
    high = [[100.0, 50.0], [100.0, 50.0], [100.0, 80.0], [100.0, 80.0]]
    close = [[100.0, 50.0], [100.0, 50.0], [100.0, 80.0], [100.0, 80.0]]
    e = _env(o, high, close, cfg)
    short = np.array([0.0, -1.0], np.float32)
    _, _, _, _, info = e.step(short)
    assert info["status"] == "ok" and info["cash"] == 2000.0 and list(info["positions"]) == [0.0, -20.0]
    _, _, term, _, info = e.step(np.array([0.0, np.nan], np.float32))  # (NaN: hold Y as it is)
    assert info["status"] == "ok" and not term
    assert list(info["positions"]) == [0.0, -20.0] and info["cash"] == 2000.0 and info["equity"] == 400.0
    assert info["trades"] == []


def test_long_only_buys_that_cost_exactly_the_cash_are_not_scaled():
    """Long-only, no fees: 100% X at 100 plans a buy of 1 x 1000 / 100 = 10 X costing 1000, exactly the
    cash. Buys are scaled only when their cost *exceeds* the cash (step 5), so exactly 10 X are
    bought and the cash is exactly 0 (scaled by the safety margin, 10 x (1 - 1e-12) would be bought)."""
    cfg = ExecutionConfig.frictionless(max_leverage=1.0)
    p = [[100.0, 50.0]] * 3
    e = _env(p, p, p, cfg, long_only=True)
    _, _, _, _, info = e.step(np.array([1.0, 0.0], np.float32))
    assert info["status"] == "ok"
    assert list(info["positions"]) == [10.0, 0.0] and info["cash"] == 0.0 and info["equity"] == 1000.0
    assert e.order_status[0] == "filled"


def test_a_one_asset_liquidation_that_leaves_exactly_zero_equity_is_in_the_trade_log():
    """One asset, no fees, no maintenance margin (liquidation when the equity at the bar's extreme is
    below 0), leverage 2. Bar 1's open: -100% sells 20 X at 50, cash 2000. Bar 2 opens at 50 and trades
    up to 150: the equity there is 2000 - 20 x 150 = -1000, so the short is bought back intrabar where
    2000 - 20 x p reaches 0: halfway along the line from the open's surplus 1000 to -1000, p = 50 +
    0.5 x 100 = 100. The account ends at cash = equity = 0, and the liquidation fill (buy 20 at 100) is
    in the step's trades, though the env's equity, cash and position are all 0 after it (the kernels
    store the rare fill rows only when a block has such a fill: a zero-equity env must not read as
    "nothing to store")."""
    o = np.array([[50.0], [50.0], [50.0], [50.0]])
    high, low, close = o.copy(), o.copy(), o.copy()
    high[2, 0], close[2, 0] = 150.0, 120.0
    prices = np.stack([o, high, np.fmin(low, close), close, np.full(o.shape, 1000.0)], axis=-1)
    t = FactorTensor.from_arrays(np.zeros((4, 1, 1)), prices, np.arange(4) * 3_600_000, symbols=["X"])
    cfg = ExecutionConfig.frictionless(max_leverage=2.0, maintenance_margin=0.0)
    e = CryptoTradingEnv(t, mapping="direct", long_only=False, execution=cfg, initial_cash=1000.0, random_start=False)
    e.reset(options={"start": 0})
    short = np.array([-1.0], np.float32)
    _, _, _, _, info = e.step(short)
    assert info["status"] == "ok" and info["cash"] == 2000.0 and list(info["positions"]) == [-20.0]
    _, _, term, _, info = e.step(short)
    assert info["status"] == "liquidated" and term
    assert info["cash"] == 0.0 and info["equity"] == 0.0 and list(info["positions"]) == [0.0]
    trades = [(x["symbol"], x["side"], x["kind"], x["quantity"], x["price"]) for x in info["trades"]]
    assert trades == [("X", "buy", "liquidation", 20.0, 100.0)]
