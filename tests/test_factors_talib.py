"""TA-Lib adapter: values against direct TA-Lib/pandas, names, inputs, scale, missing bars, errors, online."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import talib

from _factor_data import random_panel
from factorgym.data_layer.factors.base import factor_from_config
from factorgym.data_layer.factors.talib_factors import TalibFactor
from factorgym.errors import ConfigError


def test_rsi_matches_talib_and_names():
    p = random_panel(holes=False)
    f = factor_from_config({"kind": "talib", "name": "rsi", "params": {"timeperiod": 9}})
    assert f.names == ["RSI_9"] and f.warmup == 9
    out = f.compute(p)
    for a in range(p.n_assets):
        np.testing.assert_array_equal(out[:, a, 0], talib.RSI(p.close[:, a], timeperiod=9))


def test_sma_against_pandas_rolling_mean():
    p = random_panel(holes=False)
    out = TalibFactor("SMA", {"timeperiod": 20}).compute(p)
    ref = pd.DataFrame(p.close).rolling(20).mean().to_numpy()
    np.testing.assert_allclose(out[:, :, 0], ref, rtol=1e-10, equal_nan=True)


def test_multi_output_expands_and_subsets():
    p = random_panel(holes=False)
    f = TalibFactor("MACD", {"fastperiod": 12, "slowperiod": 26, "signalperiod": 9})
    assert f.names == ["MACD_12_26_9.macd", "MACD_12_26_9.macdsignal", "MACD_12_26_9.macdhist"]
    out = f.compute(p)
    m, s, h = talib.MACD(p.close[:, 0], 12, 26, 9)
    np.testing.assert_array_equal(out[:, 0, 1], s)
    np.testing.assert_array_equal(out[:, 0, 2], h)
    g = TalibFactor("BBANDS", outputs=["lowerband"], alias="bb")
    assert g.names == ["bb.lowerband"]


def test_input_mapping_and_scale():
    p = random_panel(holes=False)
    f = TalibFactor("RSI", inputs={"price": "open"})
    np.testing.assert_array_equal(f.compute(p)[:, 1, 0], talib.RSI(p.open[:, 1]))
    atr = TalibFactor("ATR", {"timeperiod": 14}, scale="close").compute(p)[:, 0, 0]
    np.testing.assert_allclose(atr, talib.ATR(p.high[:, 0], p.low[:, 0], p.close[:, 0], 14) / p.close[:, 0], equal_nan=True)
    ema = TalibFactor("EMA", {"timeperiod": 10}, scale="rel_close")
    assert ema.names == ["EMA_10/close-1"]
    np.testing.assert_allclose(ema.compute(p)[:, 2, 0], talib.EMA(p.close[:, 2], 10) / p.close[:, 2] - 1, equal_nan=True)


def test_missing_bars_compute_on_available_series():
    p = random_panel()  # asset 1 lists at row 80, asset 2 misses rows 133, 134, 200
    out = TalibFactor("EMA", {"timeperiod": 5}).compute(p)
    rows = np.flatnonzero(np.isfinite(p.close[:, 2]))
    np.testing.assert_array_equal(out[rows, 2, 0], talib.EMA(p.close[rows, 2], 5))
    assert np.isnan(out[[133, 134, 200], 2, 0]).all()
    assert np.isnan(out[:84, 1, 0]).all() and np.isfinite(out[84:, 1, 0]).all()


def test_integer_outputs_are_nan_in_warmup():
    p = random_panel(holes=False)
    f = TalibFactor("CDLENGULFING")
    out = f.compute(p)
    assert np.isnan(out[: f.warmup]).all() and np.isfinite(out[f.warmup :]).all()


@pytest.mark.parametrize("cfg, match", [
    ({"kind": "talib", "name": "RSX"}, "unknown TA-Lib function 'RSX'.*RSI"),
    ({"kind": "talib", "name": "RSI", "params": {"period": 3}}, "no parameter 'period'"),
    ({"kind": "talib", "name": "MACD", "outputs": ["signal"]}, "no output 'signal'"),
    ({"kind": "talib", "name": "RSI", "inputs": {"price": "vwap"}}, "not a candle field"),
    ({"kind": "talib", "name": "RSI", "scale": "log"}, "scale"),
    ({"kind": "talib", "name": "RSI", "params": {"timeperiod": 2.5}}, "integer"),
    ({"kind": "talib", "name": "RSI", "period": 3}, "unknown key 'period'"),
    ({"kind": "talib"}, "needs 'name'"),
    ({"kind": "tailb", "name": "RSI"}, "kind 'tailb' is not known"),
])
def test_bad_configs_give_clear_errors(cfg, match):
    with pytest.raises(ConfigError, match=match):
        factor_from_config(cfg)


def test_warmup_is_first_valid_row():
    p = random_panel(holes=False)
    for name in ("RSI", "MACD", "ADX", "STOCH", "BBANDS", "MFI", "CCI", "NATR"):
        f = TalibFactor(name)
        out = f.compute(p)
        first = int(np.argmax(np.isfinite(out[:, 0]).all(axis=1)))
        assert first == f.warmup, name


def test_online_equals_offline_for_every_function():
    """talib.stream handles vs the batch functions, bar by bar, with a late listing and holes."""
    p = random_panel(T=260, A=3, seed=3)
    bars = p.ohlcv()
    bad = []
    for name in talib.get_functions():
        if name == "MAVP":  # needs a 'periods' input series that candles do not have
            continue
        f = TalibFactor(name)
        off = f.compute(p)
        on = f.online(p.symbols)
        rows = np.stack([on.update(int(t), bars[i]) for i, t in enumerate(p.timestamps)])
        try:
            np.testing.assert_allclose(rows, off, rtol=0, atol=1e-9, equal_nan=True)
        except AssertionError:
            bad.append(name)
    assert bad == []


def test_mavp_needs_a_mapping():
    with pytest.raises(ConfigError, match="periods"):
        TalibFactor("MAVP")
