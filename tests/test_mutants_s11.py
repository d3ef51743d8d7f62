"""Tests for the survivors of session 11's mutation work (scripts/mutation.py): each holds the engine
against a value worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs import CryptoTradingEnv, ExecutionConfig


def _gap_to_zero_equity_env() -> CryptoTradingEnv:
    """X flat at 100 and untradable at bar 2; Y at 50, opening bar 2 at 100. Frictionless, leverage 2,
    no maintenance margin."""
    o = np.array([[100.0, 50.0], [100.0, 50.0], [100.0, 100.0], [100.0, 100.0]])
    prices = np.stack([o, o, o, o, np.full(o.shape, 1000.0)], axis=-1)
    tradable = np.ones((4, 2), bool)
    tradable[2, 0] = False
    t = FactorTensor.from_arrays(np.zeros((4, 2, 1)), prices, np.arange(4) * 3_600_000, symbols=["X", "Y"],
                                 tradable=tradable)
    cfg = ExecutionConfig.frictionless(max_leverage=2.0, maintenance_margin=0.0)
    e = CryptoTradingEnv(t, mapping="direct", long_only=False, execution=cfg, initial_cash=1000.0, random_start=False)
    e.reset(options={"start": 0})
    return e


def test_a_weight_asked_of_an_untradable_asset_not_held_at_an_open_of_zero_equity_is_rejected_untradable():
    """Bar 1's open: -100% Y sells 20 Y at 50, cash 2000, X not held. Bar 2: Y opens at 100, so the
    equity at the open is 2000 - 20 x 100 = 0 exactly (the env is still live: the last close was at
    1000). The agent asks 50% X, which does not trade at bar 2: X's held weight is 0 (no units, at any
    equity), the asked 0.5 differs, so X's order reads "rejected_untradable"; Y's short is closed and
    the account is bankrupt. (phases.py:117 `equity_open >= 0.0` takes 1 / 0 = inf as the inverse
    equity there: X's held weight becomes 0 x 100 x inf = NaN, which compares unequal to nothing, and
    the order would read "ignored_no_change".)"""
    e = _gap_to_zero_equity_env()
    _, _, _, _, info = e.step(np.array([0.0, -1.0], np.float32))
    assert info["status"] == "ok" and info["cash"] == 2000.0 and list(info["positions"]) == [0.0, -20.0]
    assert info["equity"] == 1000.0
    _, _, term, _, info = e.step(np.array([0.5, -1.0], np.float32))
    assert info["status"] == "bankrupt" and term and info["equity"] == pytest.approx(0.0, abs=1e-12)
    assert list(info["positions"]) == [0.0, 0.0]
    assert e.order_status[0] == "rejected_untradable"

