"""Engine paths that the mutation run (scripts/mutation.py) found unchecked, each worked by hand with
fees and slippage on two assets (so the second asset's rows are read). The numbers are derived in
the comments, independently of the engine."""

from __future__ import annotations

import math

import numpy as np
import pytest

from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs import CryptoTradingEnv, ExecutionConfig

HOUR = 3_600_000


def make_env(open_, close, cfg, tradable=None, **kw) -> CryptoTradingEnv:
    o, c = np.array(open_, float), np.array(close, float)
    prices = np.stack([o, np.fmax(o, c), np.fmin(o, c), c, np.full(o.shape, 1000.0)], axis=-1)
    t = FactorTensor.from_arrays(np.zeros((len(o), 2, 1)), prices, np.arange(len(o)) * HOUR, symbols=["X", "Y"],
                                 tradable=None if tradable is None else np.array(tradable))
    e = CryptoTradingEnv(t, mapping="direct", long_only=False, execution=cfg, initial_cash=1000.0,
                         random_start=False, **kw)
    e.reset(options={"start": 0})
    return e


def test_liquidation_at_the_close_fills_the_second_asset_at_its_close():
    """Margin breached only by the close's borrow charge (not intrabar): the short in Y (the second
    asset) is bought back at Y's close with slippage and fee, not at any other price of the bar."""
    cfg = ExecutionConfig(taker_fee=0.001, slippage_bps=10.0, half_spread_bps=0.0, impact_coef=0.0,
                          borrow_rate_per_bar=0.6, max_leverage=2.0, maintenance_margin=0.25, use_market_rules=False)
    # bar 1: Y opens at 50, closes at 55 (high 55); X flat at 100
    e = make_env([[100.0, 50.0], [100.0, 50.0], [100.0, 55.0]], [[100.0, 50.0], [100.0, 55.0], [100.0, 55.0]], cfg)
    # fill at bar 1's open (E_open 1000): Y -100% -> sell 20 at 50 x 0.999 = 49.95: proceeds 999, fee 0.999;
    # cash 1998.001. Intrabar at Y's high 55: equity 1998.001 - 1100 = 898.001 >= 0.25 x 1100: no breach.
    # Close: borrow 0.6 x 20 x 55 = 660 -> cash 1338.001, equity 238.001 < 0.25 x 1100 = 275: liquidated at
    # the close: buy 20 at 55 x 1.001 = 55.055 (cost 1101.1, fee 1.1011) -> cash = equity = 235.7999
    _, reward, term, _, info = e.step(np.array([0.0, -1.0], np.float32))
    assert info["status"] == "liquidated" and term
    kinds = [(t["symbol"], t["side"], t["kind"]) for t in info["trades"]]
    assert kinds[-1][:2] == ("Y", "buy"), kinds
    buy = info["trades"][-1]
    assert buy["quantity"] == pytest.approx(20.0, abs=1e-12) and buy["price"] == pytest.approx(55.055, abs=1e-12)
    assert buy["fee"] == pytest.approx(1.1011, abs=1e-12) and buy["slippage_cost"] == pytest.approx(1.1, abs=1e-12)
    assert info["borrow_cost"] == pytest.approx(660.0, abs=1e-9)
    assert info["cash"] == pytest.approx(235.7999, abs=1e-9) and info["equity"] == pytest.approx(235.7999, abs=1e-9)
    assert info["fees"] == pytest.approx(0.999 + 1.1011, abs=1e-12)
    assert list(info["positions"]) == [0.0, 0.0]
    assert reward == pytest.approx(math.log(235.7999 / 1000), abs=1e-12)
