"""Metrics against hand computations, pandas, and hypothesis properties."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factorgym.envs import metrics as M

pytestmark = pytest.mark.filterwarnings("error")  # no RuntimeWarning may escape

HOUR = 3_600_000
DAY = 86_400_000


def test_hand_computed_small_curve():
    eq = [100.0, 110.0, 99.0, 121.0]
    r = [0.1, -0.1, 121 / 99 - 1]
    mean = sum(r) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in r) / 2)
    down = math.sqrt((0.1**2) / 3)  # only -0.1 is below target 0; divide by all 3 returns
    bpy = 365.0
    ts = np.array([0, 1, 2, 3]) * DAY
    m = M.compute_metrics(eq, bars_per_year=bpy, timestamps=ts)
    assert m["total_return"] == pytest.approx(0.21)
    assert m["sharpe"] == pytest.approx(mean / sd * math.sqrt(365))
    assert m["sortino"] == pytest.approx(mean / down * math.sqrt(365))
    assert m["ann_volatility"] == pytest.approx(sd * math.sqrt(365))
    assert m["max_drawdown"] == pytest.approx(0.1)  # 110 -> 99
    years = 3 / 365
    assert m["years"] == pytest.approx(years)
    assert m["cagr"] == pytest.approx(1.21 ** (1 / years) - 1)
    assert m["calmar"] == pytest.approx(m["cagr"] / 0.1)
    assert m["n_bars"] == 3


def test_cagr_from_calendar_time():
    # +21 % over exactly two 365-day years -> 10 % a year, whatever the bar count
    eq = np.array([1.0, 1.05, 1.21])
    ts = np.array([0, 365 * DAY, 2 * 365 * DAY])
    assert M.compute_metrics(eq, bars_per_year=8760, timestamps=ts)["cagr"] == pytest.approx(0.10)
    # without timestamps the bar count decides: 2 bars of 1 year each
    assert M.compute_metrics(eq, bars_per_year=1.0)["cagr"] == pytest.approx(0.10)


def test_against_pandas():
    rng = np.random.default_rng(3)
    eq = 1000 * np.cumprod(1 + rng.normal(0.0005, 0.01, 500))
    s = pd.Series(eq)
    r = s.pct_change().dropna()
    bpy = M.bars_per_year_from_ms(HOUR)
    m = M.compute_metrics(eq, bars_per_year=bpy)
    assert m["sharpe"] == pytest.approx(r.mean() / r.std() * np.sqrt(bpy), rel=1e-10)
    assert m["ann_volatility"] == pytest.approx(r.std() * np.sqrt(bpy), rel=1e-10)
    dd = (r.clip(upper=0) ** 2).mean() ** 0.5
    assert m["sortino"] == pytest.approx(r.mean() / dd * np.sqrt(bpy), rel=1e-10)
    assert m["max_drawdown"] == pytest.approx((1 - s / s.cummax()).max(), rel=1e-12)
    assert np.allclose(M.drawdown(eq), (1 - s / s.cummax()).to_numpy())
    assert m["total_return"] == pytest.approx(s.iloc[-1] / s.iloc[0] - 1)


def test_annualisation_hourly_vs_daily():
    assert M.bars_per_year_from_ms(HOUR) == 8760
    assert M.bars_per_year_from_ms(DAY) == 365
    rng = np.random.default_rng(0)
    eq = 100 * np.cumprod(1 + rng.normal(0.001, 0.02, 200))
    h = M.compute_metrics(eq, bars_per_year=8760, timestamps=np.arange(200) * HOUR)
    d = M.compute_metrics(eq, bars_per_year=365, timestamps=np.arange(200) * DAY)
    assert h["sharpe"] / d["sharpe"] == pytest.approx(math.sqrt(24))
    assert h["ann_volatility"] / d["ann_volatility"] == pytest.approx(math.sqrt(24))
    assert d["years"] / h["years"] == pytest.approx(24)
    assert d["total_return"] == h["total_return"]


def test_flat_curve():
    m = M.compute_metrics(np.full(50, 1e4), bars_per_year=8760, turnover=np.zeros(50), fees=np.zeros(50),
                          gross_exposure=np.zeros(50), n_trades=0)
    assert m["total_return"] == 0 and m["cagr"] == 0 and m["max_drawdown"] == 0
    assert m["ann_volatility"] == 0
    assert math.isnan(m["sharpe"]) and math.isnan(m["sortino"]) and math.isnan(m["calmar"])
    assert math.isnan(m["hit_rate"])  # never exposed
    assert m["exposure"] == 0 and m["fees"] == 0 and m["turnover"] == 0


def test_constant_positive_return_is_infinite_sharpe():
    eq = 100 * 1.001 ** np.arange(30)
    m = M.compute_metrics(eq, bars_per_year=365)
    assert m["sharpe"] == math.inf and m["sortino"] == math.inf
    assert m["max_drawdown"] == 0 and m["calmar"] == math.inf


def test_one_bar_and_empty():
    m = M.compute_metrics([500.0], bars_per_year=365, timestamps=[0])
    assert m["total_return"] == 0 and m["max_drawdown"] == 0 and m["n_bars"] == 0
    for k in ("cagr", "sharpe", "sortino", "ann_volatility", "calmar"):
        assert math.isnan(m[k]), k
    m0 = M.compute_metrics([], bars_per_year=365)
    assert math.isnan(m0["total_return"]) and m0["n_bars"] == 0


def test_bankruptcy_cuts_the_curve():
    eq = [100.0, 50.0, -5.0, 10.0, 20.0]  # ruined at bar 2; later values are ignored
    m = M.compute_metrics(eq, bars_per_year=365, timestamps=np.arange(5) * DAY, fees=[0, 1, 1, 1, 1])
    assert m["ruined"] == 1.0 and m["final_equity"] == 0.0
    assert m["total_return"] == -1.0 and m["cagr"] == -1.0 and m["max_drawdown"] == 1.0
    assert m["n_bars"] == 2 and m["fees"] == 2.0
    assert m["years"] == pytest.approx(2 / 365)
    assert m["calmar"] == -1.0
    np.testing.assert_allclose(M.simple_returns(eq), [-0.5, -1.0])


def test_bad_input_messages():
    with pytest.raises(ValueError, match="finite"):
        M.compute_metrics([1.0, np.nan], bars_per_year=1)
    with pytest.raises(ValueError, match="first equity"):
        M.compute_metrics([0.0, 1.0], bars_per_year=1)
    with pytest.raises(ValueError, match="timestamps"):
        M.compute_metrics([1.0, 2.0], bars_per_year=1, timestamps=[0])
    with pytest.raises(ValueError, match="timeframe_ms"):
        M.bars_per_year_from_ms(0)


def test_turnover_fees_exposure_hit_rate():
    eq = [100.0, 101.0, 100.0, 100.0, 103.0]
    gx = [0.0, 1.0, 1.0, 0.0, 0.5]  # exposed at the close of bars 1, 2, 4
    to = [0.0, 1.0, 0.0, 1.0, 0.5]
    fees = [0.0, 0.1, 0.0, 0.1, 0.05]
    m = M.compute_metrics(eq, bars_per_year=10, turnover=to, fees=fees, gross_exposure=gx, n_trades=3)
    assert m["hit_rate"] == pytest.approx(2 / 3)  # +1 %, -1 %, +3 % while exposed; the flat bar is not
    assert m["exposure"] == pytest.approx(2.5 / 4)
    assert m["turnover"] == pytest.approx(2.5 / 4 * 10)
    assert m["total_turnover"] == pytest.approx(2.5)
    assert m["fees"] == pytest.approx(0.25) and m["fees_frac"] == pytest.approx(0.0025)
    assert m["n_trades"] == 3


curves = st.lists(st.floats(-0.5, 0.5, allow_nan=False), min_size=2, max_size=80).map(
    lambda r: 100.0 * np.cumprod(1.0 + np.asarray(r))
)
# the same, with a chance of ruin (a -100 % bar)
ruinable = st.lists(st.one_of(st.floats(-0.5, 0.5, allow_nan=False), st.just(-1.0)), min_size=1, max_size=80).map(
    lambda r: 100.0 * np.cumprod(np.concatenate([[1.0], 1.0 + np.asarray(r)]))
)


@settings(max_examples=80, deadline=None)
@given(ruinable, st.floats(1e-3, 1e6))
def test_scale_invariance(eq, c):
    a = M.compute_metrics(eq, bars_per_year=8760)
    b = M.compute_metrics(eq * c, bars_per_year=8760)
    for k in ("total_return", "cagr", "ann_volatility", "sharpe", "sortino", "max_drawdown", "calmar", "hit_rate"):
        x, y = a[k], b[k]
        if math.isnan(x) or math.isinf(x) or abs(x) > 1e12:
            assert math.isnan(y) or math.isinf(y) or abs(y) > 1e11 or math.isclose(x, y, rel_tol=1e-6), k
        else:
            assert y == pytest.approx(x, rel=1e-6, abs=1e-9), k


@settings(max_examples=80, deadline=None)
@given(ruinable)
def test_properties(eq):
    m = M.compute_metrics(eq, bars_per_year=365)
    assert 0.0 <= m["max_drawdown"] <= 1.0
    dd = M.drawdown(eq)
    assert np.all((dd >= 0) & (dd <= 1))
    r = M.simple_returns(eq)
    assert m["total_return"] == pytest.approx(np.prod(1 + r) - 1, rel=1e-9, abs=1e-12)
    if np.all(np.diff(eq) >= 0):
        assert m["max_drawdown"] == 0.0
    if math.isfinite(m["sharpe"]) and m["sharpe"] != 0:
        assert np.sign(m["sharpe"]) == np.sign(r.mean())
        assert np.sign(m["sortino"]) == np.sign(r.mean())
    assert m["total_return"] >= -1.0


@settings(max_examples=50, deadline=None)
@given(curves)
def test_mdd_matches_bruteforce(eq):
    brute = max((1 - eq[j] / eq[i] for i in range(len(eq)) for j in range(i, len(eq))), default=0.0)
    assert M.max_drawdown(eq) == pytest.approx(max(brute, 0.0), abs=1e-12)
