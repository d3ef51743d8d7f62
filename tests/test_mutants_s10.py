"""Tests for the survivors of session 10's mutation samples (scripts/mutation.py, seed 10011): each
holds the engine against a value worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from factorgym.envs import ExecutionConfig
from test_mutants_engine import make_env


def test_a_position_of_exactly_one_unit_counts_in_the_equity_that_sizes_the_next_orders():
    """Frictionless, X at 250 and Y at 50 throughout. Bar 1's open: 25% in X buys exactly 1 X
    (0.25 x 1000 / 250), cash 750. Bar 2's open: 25% X and 50% Y of the equity at the open, 750 +
    1 x 250 = 1000: X stays at 1 unit, Y is 0.5 x 1000 / 50 = 10 units, cash 250, equity 1000.
    (A position of 1 unit left out of the open's equity would size both on 750.)"""
    cfg = ExecutionConfig.frictionless(max_leverage=1.0)
    prices = [[250.0, 50.0]] * 4
    e = make_env(prices, prices, cfg)
    _, _, _, _, info = e.step(np.array([0.25, 0.0], np.float32))
    assert list(info["positions"]) == [1.0, 0.0] and info["cash"] == 750.0
    _, _, _, _, info = e.step(np.array([0.25, 0.5], np.float32))
    assert list(info["positions"]) == pytest.approx([1.0, 10.0], abs=1e-12)
    assert info["cash"] == pytest.approx(250.0, abs=1e-9) and info["equity"] == pytest.approx(1000.0, abs=1e-9)


def test_a_signed_action_below_minus_one_is_clipped_to_minus_one():
    """The signed mapping takes A values in [-1, 1] times max_leverage; a value beyond is clipped
    (as the clamp in actions.py documents): [-2, 1] is [-1, 1], weights -1 and 1 scaled to the gross
    leverage of 1: -0.5 and 0.5, i.e. -2 X and 2 Y at 250 (unclipped, -2 and 1 would scale to -2/3
    and 1/3)."""
    from factorgym.data_layer.tensor import FactorTensor
    from factorgym.envs import CryptoTradingEnv

    p = np.full((4, 2), 250.0)
    prices = np.stack([p, p, p, p, np.full(p.shape, 1000.0)], axis=-1)
    t = FactorTensor.from_arrays(np.zeros((4, 2, 1)), prices, np.arange(4) * 3_600_000, symbols=["X", "Y"])
    got = []
    for a in (-2.0, -1.0):  # (X's value; Y's is 1)
        e = CryptoTradingEnv(t, mapping="signed", long_only=False, initial_cash=1000.0, random_start=False,
                             execution=ExecutionConfig.frictionless(max_leverage=1.0))
        e.reset(options={"start": 0})
        _, _, _, _, info = e.step(np.array([a, 1.0], np.float32))
        got.append(list(info["positions"]))
    assert got[0] == got[1] == pytest.approx([-2.0, 2.0], abs=1e-12)


def test_an_intrabar_margin_shortfall_under_one_unit_of_quote_liquidates():
    """No fees. Bar 1's open: Y -100% sells 20 Y at 50 (cash 2000). Bar 2 opens at 50 (the target
    is unchanged: no order), trades up to 80.02 and closes at 50. At the high the equity is
    2000 - 20 x 80.02 = 399.6 against a maintenance of 0.25 x 1600.4 = 400.1: a shortfall of 0.5
    (less than one unit of quote, still a breach), so the short is bought back intrabar where the
    surplus 2000 - 25 x p reaches 0, at 80: cash = equity = 2000 - 1600 = 400. (Without the
    intrabar check the close at 50 leaves the account whole: equity 1000, status ok.)"""
    cfg = ExecutionConfig.frictionless(max_leverage=2.0, maintenance_margin=0.25)
    o = np.array([[100.0, 50.0], [100.0, 50.0], [100.0, 50.0], [100.0, 50.0]])
    c = o.copy()
    high, low = o.copy(), o.copy()
    high[2, 1] = 80.02
    prices = np.stack([o, high, low, c, np.full(o.shape, 1000.0)], axis=-1)
    from factorgym.data_layer.tensor import FactorTensor
    from factorgym.envs import CryptoTradingEnv

    t = FactorTensor.from_arrays(np.zeros((4, 2, 1)), prices, np.arange(4) * 3_600_000, symbols=["X", "Y"])
    e = CryptoTradingEnv(t, mapping="direct", long_only=False, execution=cfg, initial_cash=1000.0, random_start=False)
    e.reset(options={"start": 0})
    short = np.array([0.0, -1.0], np.float32)
    _, _, _, _, info = e.step(short)
    assert info["status"] == "ok" and info["cash"] == pytest.approx(2000.0, abs=1e-9)
    _, _, term, _, info = e.step(short)
    assert info["status"] == "liquidated" and term
    assert list(info["positions"]) == [0.0, 0.0]
    assert info["trades"][-1]["price"] == pytest.approx(80.0, abs=1e-6)
    assert info["equity"] == pytest.approx(400.0, abs=1e-6) and info["cash"] == pytest.approx(400.0, abs=1e-6)


def test_an_untradable_asset_at_an_open_of_exactly_zero_equity_is_rejected_untradable():
    """Frictionless, leverage 2. Bar 1's open: 25% X buys 2.5 X at 100, -100% Y sells 20 Y at 50:
    cash 1000 - 250 + 1000 = 1750. Bar 2: X does not trade (its mark stays 100), Y opens at 100:
    equity at the open 1750 + 250 - 2000 = 0 exactly. The account is bankrupt at the gap: Y's short
    is closed, X (untradable) keeps its 2.5 units and its order reads "rejected_untradable". (Written
    for phases.py:117, `equity_open >= 0.0` before 1 / equity_open; it does not kill it: a held asset's
    weight is +-inf there, still rejected. test_mutants_s11.py's asset NOT held, whose weight is NaN,
    does.)"""
    from factorgym.data_layer.tensor import FactorTensor
    from factorgym.envs import CryptoTradingEnv

    cfg = ExecutionConfig.frictionless(max_leverage=2.0, maintenance_margin=0.0)
    o = np.array([[100.0, 50.0], [100.0, 50.0], [100.0, 100.0], [100.0, 100.0]])
    prices = np.stack([o, o, o, o, np.full(o.shape, 1000.0)], axis=-1)
    tradable = np.ones((4, 2), bool)
    tradable[2, 0] = False
    t = FactorTensor.from_arrays(np.zeros((4, 2, 1)), prices, np.arange(4) * 3_600_000, symbols=["X", "Y"],
                                 tradable=tradable)
    e = CryptoTradingEnv(t, mapping="direct", long_only=False, execution=cfg, initial_cash=1000.0, random_start=False)
    e.reset(options={"start": 0})
    _, _, _, _, info = e.step(np.array([0.25, -1.0], np.float32))
    assert info["cash"] == 1750.0 and list(info["positions"]) == [2.5, -20.0]
    _, _, term, _, info = e.step(np.array([0.5, -1.0], np.float32))
    assert info["status"] == "bankrupt" and term and info["equity"] == 0.0
    assert list(info["positions"]) == [2.5, 0.0]
    assert e.order_status == ["rejected_untradable", "filled"]
