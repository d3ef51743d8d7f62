"""Benchmark-relative and diagnostic metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs.backtest import backtest
from factorgym.envs.config import ExecutionConfig
from factorgym.envs.relative_metrics import (
    benchmark_returns,
    diagnostics,
    exposure_frame,
    holding_periods,
    monthly_returns,
    pnl_attribution,
    relative_metrics,
    rolling_sharpe,
)
from factorgym.errors import ConfigError

H = 3_600_000


def _tensor(close, tradable=None):
    close = np.asarray(close, float)
    T, A = close.shape
    return FactorTensor.from_arrays(np.zeros((T, A, 1)), close, np.arange(T) * H,
                                    symbols=["BTC/USDT", "ETH/USDT"][:A], tradable=tradable)


def test_benchmark_returns_symbol_and_equal_weight_by_hand():
    t = _tensor([[100, 50], [110, 50], [99, 55], [99, 44]])
    assert benchmark_returns(t, 0, 4, "BTC") == pytest.approx([0.1, -0.1, 0.0])
    assert benchmark_returns(t, 1, 4, "ETH/USDT") == pytest.approx([0.1, -0.2])
    assert benchmark_returns(t, 0, 4) == pytest.approx([0.05, 0.0, -0.1])
    # an asset untradable at either end of a bar leaves the basket for that bar
    trad = np.array([[1, 1], [1, 0], [1, 1], [1, 1]], bool)
    t2 = _tensor([[100, 50], [110, 50], [99, 55], [99, 44]], tradable=trad)
    assert benchmark_returns(t2, 0, 4) == pytest.approx([0.1, -0.1, -0.1])
    with pytest.raises(ConfigError, match="'XRP'"):
        benchmark_returns(t, 0, 4, "XRP")


def test_relative_metrics_by_hand():
    b = np.array([0.01, -0.02, 0.03, 0.0])
    r = 2 * b + 0.001  # beta 2, alpha 0.001 a bar
    m = relative_metrics(r, b, bars_per_year=100)
    assert m["beta"] == pytest.approx(2.0)
    assert m["alpha"] == pytest.approx(0.1)
    assert m["correlation"] == pytest.approx(1.0)
    active = r - b
    assert m["tracking_error"] == pytest.approx(np.std(active, ddof=1) * 10)
    assert m["information_ratio"] == pytest.approx(active.mean() / np.std(active, ddof=1) * 10)
    assert m["excess_return"] == pytest.approx(np.prod(1 + r) - np.prod(1 + b))
    same = relative_metrics(b, b, 100)
    assert same["tracking_error"] == 0 and math.isnan(same["information_ratio"])
    assert math.isnan(relative_metrics(b, np.zeros(4), 100)["beta"])


def test_rolling_sharpe_by_hand():
    r = np.array([0.01, 0.03, 0.02, -0.01, 0.0])
    rs = rolling_sharpe(r, 3, bars_per_year=4)
    assert np.isnan(rs[:2]).all()
    for k in range(2, 5):
        w = r[k - 2:k + 1]
        assert rs[k] == pytest.approx(w.mean() / w.std(ddof=1) * 2)
    assert np.isnan(rolling_sharpe(np.zeros(5), 3, 4)[2:]).all()


def test_monthly_returns_table_by_hand():
    ts = pd.to_datetime(["2024-01-01", "2024-01-31", "2024-02-15", "2024-02-29", "2025-03-01"], utc=True)
    ms = (ts.as_unit("ms").asi8).astype(np.int64)
    eq = np.array([100.0, 110.0, 99.0, 121.0, 60.5])
    tab = monthly_returns(eq, ms)
    assert tab.loc[2024, 1] == pytest.approx(0.10)
    assert tab.loc[2024, 2] == pytest.approx(0.10)   # 110 -> 121
    assert tab.loc[2024, "year"] == pytest.approx(0.21)
    assert tab.loc[2025, 3] == pytest.approx(-0.5)   # 121 -> 60.5
    assert math.isnan(tab.loc[2024, 5]) and math.isnan(tab.loc[2025, 1])


def test_exposure_and_holding_periods_by_hand():
    w = np.array([[0.5, -0.2], [0.3, 0.0], [-0.1, 0.4]])
    ex = exposure_frame(w)
    assert ex["long"].tolist() == pytest.approx([0.5, 0.3, 0.4])
    assert ex["short"].tolist() == pytest.approx([-0.2, 0.0, -0.1])
    assert ex["net"].tolist() == pytest.approx([0.3, 0.3, 0.3])
    assert ex["gross"].tolist() == pytest.approx([0.7, 0.3, 0.5])
    q = np.array([[0, 0], [1, 0], [2, -1], [0, -1], [0, -1], [-1, 1], [-1, 0]], float)
    hp = holding_periods(q, ["A", "B"])
    # A: long 2 bars, short 2 bars (open at the end); B: short 3 bars, long 1 bar
    assert hp.loc["A", "spells"] == 2 and hp.loc["A", "mean_bars"] == 2.0
    assert hp.loc["B", "spells"] == 2 and hp.loc["B", "mean_bars"] == 2.0
    assert hp.loc["all", "spells"] == 4 and hp.loc["A", "share_held"] == pytest.approx(4 / 7)


def test_pnl_attribution_adds_up_and_matches_hand_fees():
    # one asset doubles over the run; buy-and-hold 100 % with a 10 bps fee and 20 bps slippage
    close = np.column_stack([np.linspace(100, 200, 11), np.full(11, 50.0)])
    t = _tensor(close)
    ex = ExecutionConfig.frictionless(taker_fee=0.001, slippage_bps=20.0)
    res = backtest(t, lambda obs: np.array([1.0, 0.0]), mapping="direct", execution=ex, initial_cash=10_000)
    att = pnl_attribution(res, t)
    fills = res.trades
    assert att.loc["BTC/USDT", "fees"] == pytest.approx(-fills["fee"].sum())
    assert att.loc["BTC/USDT", "slippage"] == pytest.approx(-fills["slippage_cost"].sum())
    assert att.loc["ETH/USDT", "net"] == 0.0
    assert abs(att.loc["residual", "net"]) < 1e-6
    assert att.loc["total", "net"] == pytest.approx(res.equity[-1] - res.equity[0])
    # first fill at bar 1's open (110): q = 10000/(110*1.002)/(1+0.001 fee share) roughly; the price
    # P&L is q_end * (200 - 110) at the reference price, by hand from the recorded first fill
    first = fills.iloc[0]
    q_first = first["quantity"]
    assert first["price"] == pytest.approx(110 * 1.002)
    assert att.loc["BTC/USDT", "price"] == pytest.approx(res.positions[-1, 0] * 200 - q_first * 110
                                                         - (fills["quantity"].iloc[1:] * fills["price"].iloc[1:]
                                                            * np.where(fills["side"].iloc[1:] == "buy", 1, -1)).sum()
                                                         - fills["slippage_cost"].iloc[1:].sum())


def test_pnl_attribution_short_borrow_and_funding_by_hand():
    # short 50 % of asset 0 every bar with borrow 1 bp a bar; constant prices, so only costs move equity
    T = 8
    close = np.column_stack([np.full(T, 100.0), np.full(T, 10.0)])
    t = _tensor(close)
    t.funding = np.full((T, 2), 0.0)  # the funding field, when the tensor carries one
    ex = ExecutionConfig.frictionless(borrow_rate_per_bar=1e-4, max_leverage=1.0)
    res = backtest(t, lambda obs: np.array([-0.5, 0.0]), mapping="direct", execution=ex, env_kwargs={"long_only": False})
    att = pnl_attribution(res, t, borrow_rate_per_bar=1e-4)
    short_notional = -(res.positions[1:, 0] * 100.0)
    assert att.loc["BTC/USDT", "borrow"] == pytest.approx(-1e-4 * short_notional[short_notional > 0].sum())
    assert att.loc["BTC/USDT", "price"] == pytest.approx(0.0, abs=1e-9)
    assert abs(att.loc["residual", "net"]) < 1e-6
    # funding by hand: a funding rate of 1e-3 on the short (pays -> receives for a short)
    t.funding = np.full((T, 2), 1e-3)
    att_f = pnl_attribution(res, t, borrow_rate_per_bar=1e-4)
    assert att_f.loc["BTC/USDT", "funding"] == pytest.approx(1e-3 * short_notional.sum())


def test_diagnostics_bundle_on_a_backtest():
    rng = np.random.default_rng(0)
    T = 24 * 40
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, size=(T, 2)), axis=0))
    t = _tensor(close)
    res = backtest(t, lambda obs: np.array([0.5, 0.5]), mapping="direct")
    d = diagnostics(res, t, benchmark="equal_weight")
    assert d["rolling_window"] == 24 * 30
    assert 0.8 < d["relative"]["beta"] < 1.1
    assert d["monthly"].shape[1] == 13
    assert len(d["exposure"]) == len(res.equity)
    assert d["holding"].loc["all", "spells"] >= 2
    assert d["attribution"].loc["total", "net"] == pytest.approx(res.equity[-1] - res.equity[0])


def test_html_report_shows_the_diagnostics(tmp_path):
    from factorgym.envs.report import write_html_report

    rng = np.random.default_rng(1)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, size=(200, 2)), axis=0))
    t = _tensor(close)
    res = backtest(t, lambda obs: np.array([0.7, 0.3]), mapping="direct")
    page = write_html_report(tmp_path / "r.html", {"policy": res}, tensor=t).read_text()
    assert "Diagnostics" in page and "P&amp;L attribution" in page and "against equal_weight" in page
    page = write_html_report(tmp_path / "r2.html", {"policy": res}).read_text()
    assert "Diagnostics" not in page  # opt-in: the page stays as it was without the tensor
