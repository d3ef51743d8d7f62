"""Custom factors: decorator and module:function registration, built-ins against pandas,
look-ahead / short warm-up refusal, clear errors, online == offline."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
import pytest

from _factor_data import random_panel
from factorgym.data_layer.factors.base import factor_from_config
from factorgym.data_layer.factors.custom import custom_factor
from factorgym.errors import ConfigError


@custom_factor("test_range_mean", warmup=lambda p: p["window"] - 1)
def _range_mean(open, high, low, close, volume, window=5):
    r = (high - low) / close
    return pd.Series(r).rolling(window).mean().to_numpy()


@custom_factor("test_peek", warmup=0)
def _peek(open, high, low, close, volume):
    return np.concatenate([close[1:] / close[:-1], [np.nan]])  # reads bar t+1: look-ahead


@custom_factor("test_bfill", warmup=0)
def _bfill(open, high, low, close, volume):
    return pd.Series(close).pct_change().bfill().to_numpy()  # row 0 takes row 1's value: look-ahead at bar 0 only


@custom_factor("test_cumsum", warmup=3)
def _cumsum(open, high, low, close, volume):
    return np.cumsum(np.log(close))  # needs all history, not 3 bars


def test_decorated_factor_by_name():
    p = random_panel(holes=False)
    f = factor_from_config({"kind": "custom", "name": "test_range_mean", "params": {"window": 7}})
    assert f.names == ["test_range_mean_7"] and f.warmup == 6
    out = f.compute(p)
    ref = ((pd.DataFrame(p.high) - pd.DataFrame(p.low)) / pd.DataFrame(p.close)).rolling(7).mean().to_numpy()
    np.testing.assert_allclose(out[:, :, 0], ref, rtol=1e-12, equal_nan=True)


def test_module_function_from_yaml(tmp_path, monkeypatch):
    (tmp_path / "my_factors_mod.py").write_text(textwrap.dedent("""
        import numpy as np
        def spread(open, high, low, close, volume, k=1.0):
            return np.column_stack([k * (high - low) / close, (close - open) / close])
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    f = factor_from_config({"kind": "custom", "func": "my_factors_mod:spread", "warmup": 0,
                            "params": {"k": 2.0}, "outputs": ["hl", "co"]})
    assert f.names == ["spread_2.hl", "spread_2.co"]
    p = random_panel(holes=False)
    np.testing.assert_allclose(f.compute(p)[:, 0, 0], 2.0 * (p.high[:, 0] - p.low[:, 0]) / p.close[:, 0])
    with pytest.raises(ConfigError, match="needs 'warmup'"):
        factor_from_config({"kind": "custom", "func": "my_factors_mod:spread"})


def test_builtins_against_pandas():
    p = random_panel(T=300, holes=False)
    c = pd.Series(p.close[:, 0])
    v = pd.Series(p.volume[:, 0])
    lr = factor_from_config({"kind": "custom", "name": "log_return", "params": {"periods": 3}}).compute(p)[:, 0, 0]
    np.testing.assert_allclose(lr, np.log(c / c.shift(3)).to_numpy(), rtol=1e-12, equal_nan=True)
    rv = factor_from_config({"kind": "custom", "name": "realized_vol", "params": {"window": 10}}).compute(p)[:, 0, 0]
    np.testing.assert_allclose(rv, np.log(c).diff().rolling(10).std(ddof=0).to_numpy(), rtol=1e-9, equal_nan=True)
    vz = factor_from_config({"kind": "custom", "name": "volume_zscore", "params": {"window": 12}}).compute(p)[:, 0, 0]
    lv = np.log1p(v)
    ref = ((lv - lv.rolling(12).mean()) / lv.rolling(12).std(ddof=0)).to_numpy()
    np.testing.assert_allclose(vz, ref, rtol=1e-9, atol=1e-12, equal_nan=True)
    pp = factor_from_config({"kind": "custom", "name": "price_position", "params": {"window": 8}}).compute(p)[:, 0, 0]
    hi = pd.Series(p.high[:, 0]).rolling(8).max()
    lo = pd.Series(p.low[:, 0]).rolling(8).min()
    np.testing.assert_allclose(pp, ((c - lo) / (hi - lo)).to_numpy(), rtol=1e-12, equal_nan=True)
    sign = np.sign(c.diff())
    of = factor_from_config({"kind": "custom", "name": "obv_flow", "params": {"window": 6}}).compute(p)[:, 0, 0]
    ref = ((sign * v).rolling(6).sum() / v.where(c.diff().notna()).rolling(6).sum()).to_numpy()
    np.testing.assert_allclose(of, ref, rtol=1e-9, equal_nan=True)
    assert np.nanmin(of) >= -1 and np.nanmax(of) <= 1


def test_lookahead_is_refused():
    f = factor_from_config({"kind": "custom", "name": "test_peek"})
    with pytest.raises(ConfigError, match="looks ahead"):
        f.compute(random_panel(holes=False))


def test_lookahead_in_the_first_row_only_is_refused():
    f = factor_from_config({"kind": "custom", "name": "test_bfill"})
    with pytest.raises(ConfigError, match=r"looks ahead: its rows <= 0 change"):
        f.compute(random_panel(holes=False))


def test_short_warmup_is_refused():
    f = factor_from_config({"kind": "custom", "name": "test_cumsum"})
    with pytest.raises(ConfigError, match="declare a larger warmup"):
        f.compute(random_panel(holes=False))


@pytest.mark.parametrize("cfg, match", [
    ({"kind": "custom", "name": "nope"}, "not registered"),
    ({"kind": "custom", "func": "no_such_module_xyz:f", "warmup": 1}, "cannot import module"),
    ({"kind": "custom", "func": "numpy:no_such_fn", "warmup": 1}, "has no attribute"),
    ({"kind": "custom", "func": "numpy", "warmup": 1}, "module:function"),
    ({"kind": "custom", "name": "log_return", "window": 3}, "unknown key 'window'"),
    ({"kind": "custom", "name": "log_return", "warmup": -1}, "warmup must be"),
    # (a declared warm-up is never truncated or coerced: 2.5 is not 2, true is not 1, "3" is not 3)
    ({"kind": "custom", "name": "log_return", "warmup": 2.5}, "warmup must be a whole number"),
    ({"kind": "custom", "name": "log_return", "warmup": True}, "warmup must be a whole number"),
    ({"kind": "custom", "name": "log_return", "warmup": "3"}, "warmup must be a whole number"),
    ({"kind": "custom", "func": "numpy:cumsum", "warmup": "abc"}, "warmup must be a whole number"),
])
def test_bad_configs(cfg, match):
    with pytest.raises(ConfigError, match=match):
        factor_from_config(cfg)


@pytest.mark.parametrize("nbdev", [-2.0, 0, 0.0, float("nan"), True, "2"])
def test_bb_pctb_refuses_a_band_width_that_is_not_positive_offline_and_online(nbdev):
    """A negative ``nbdev`` swaps TA-Lib's bands (every %b would read 0.5), 0 collapses them: one line,
    naming the parameter, from the tensor build and from the live loop's online state alike."""
    f = factor_from_config({"kind": "custom", "name": "bb_pctb", "params": {"timeperiod": 5, "nbdev": nbdev}})
    with pytest.raises(ConfigError, match=r"^bb_pctb: nbdev=.*; expected a number of standard deviations > 0$"):
        f.compute(random_panel(holes=False))
    with pytest.raises(ConfigError, match="bb_pctb: nbdev="):
        f.online(["A/USDT", "B/USDT"])


def test_bb_pctb_of_a_positive_band_width_is_pandas_percent_b():
    """%b with a band of 1.5 standard deviations (population, as TA-Lib's BBANDS) against pandas: the
    parameter reaches both bands."""
    p = random_panel(T=60, seed=3, holes=False)
    out = factor_from_config({"kind": "custom", "name": "bb_pctb", "params": {"timeperiod": 5, "nbdev": 1.5}}).compute(p)
    c = pd.DataFrame(p.ohlcv()[:, :, 3])
    mid, sd = c.rolling(5).mean(), c.rolling(5).std(ddof=0)
    want = (c - (mid - 1.5 * sd)) / (3.0 * sd)
    np.testing.assert_allclose(out[4:, :, 0], want.to_numpy()[4:], rtol=1e-9, atol=1e-9)


def test_wrong_output_shape_is_a_clear_error():
    f = factor_from_config({"kind": "custom", "func": "numpy:ones_like", "warmup": 0})  # ones_like(open, high, ...) -> TypeError
    with pytest.raises(ConfigError, match="failed"):
        f.compute(random_panel(holes=False))


@pytest.mark.parametrize("cfg", [
    {"kind": "custom", "name": "log_return", "params": {"periods": 2}},
    {"kind": "custom", "name": "realized_vol", "params": {"window": 9}},
    {"kind": "custom", "name": "volume_zscore", "params": {"window": 7}},
    {"kind": "custom", "name": "bb_pctb", "params": {"timeperiod": 10}},
    {"kind": "custom", "name": "obv_flow", "params": {"window": 5}},
    {"kind": "custom", "name": "candle_shape"},
    {"kind": "custom", "name": "price_position", "params": {"window": 6}},
    {"kind": "custom", "name": "test_range_mean", "params": {"window": 4}},
])
def test_online_equals_offline(cfg):
    p = random_panel(T=200, seed=5)
    f = factor_from_config(cfg)
    off = f.compute(p)
    on = f.online(p.symbols)
    bars = p.ohlcv()
    rows = np.stack([on.update(int(t), bars[i]) for i, t in enumerate(p.timestamps)])
    np.testing.assert_allclose(rows, off, rtol=0, atol=1e-9, equal_nan=True)


def test_a_whole_float_warmup_is_that_many_bars():
    assert factor_from_config({"kind": "custom", "name": "log_return", "warmup": 3.0}).warmup == 3
    assert factor_from_config({"kind": "custom", "name": "log_return", "warmup": 3}).warmup == 3
