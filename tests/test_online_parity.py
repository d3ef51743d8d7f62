"""Online == offline: OnlineFactors rebuilt from a saved tensor's meta, fed the candles one bar at a
time, reproduces every tensor row bit for bit for TA-Lib and custom factors (stream handles and the
custom factors' incremental state), with late listings, dropped bars and store-marked gap bars;
Qlib's online path to 1e-5 relative (see test_quickstart_qlib_rows_online_equal_offline)."""

from __future__ import annotations

import numpy as np
import pytest

from _factor_data import HOUR, frames, random_ohlcv
from factorgym.data_layer.build import align_candles, build_tensor_from_candles
from factorgym.data_layer.factors.base import registered_kinds
from factorgym.data_layer.factors.online import OnlineFactors
from factorgym.data_layer.sources.files import load_candle_file
from factorgym.data_layer.tensor import FactorTensor


def _replay(tensor: FactorTensor, candles) -> np.ndarray:
    ts, ohlcv, store_ok = align_candles(candles, tensor.timeframe)
    online = OnlineFactors.from_tensor(tensor)
    rows = np.stack([online.update(int(ts[i]), ohlcv[i], store_ok[i]) for i in range(len(ts))])
    start = tensor.meta["dropped_warmup_rows"]
    assert np.array_equal(ts[start:], tensor.timestamps)
    return rows[start:]


@pytest.fixture(scope="module")
def btc_hourly():
    from conftest import require_shared_data

    return load_candle_file(require_shared_data("bitfinex_btcusd_1h.csv"))


@pytest.mark.parametrize("factor_set", ["talib_default", "custom_example"])
def test_every_bar_of_btc_hourly(btc_hourly, factor_set, tmp_path):
    built = build_tensor_from_candles(btc_hourly, "1h", factor_set, source="file:bitfinex")
    tensor = FactorTensor.load(built.save(tmp_path / "t"), mmap=True)  # stats travel through meta.json
    rows = _replay(tensor, btc_hourly)
    assert tensor.n_bars > 17_000
    np.testing.assert_array_equal(rows.astype(np.float32), tensor.features)


BUILT_IN_CUSTOM = [("log_return", {"periods": 1}), ("log_return", {"periods": 24}), ("realized_vol", {"window": 48}),
                   ("volume_zscore", {"window": 24}), ("bb_pctb", {"timeperiod": 20, "nbdev": 2.0}),
                   ("bb_pctb", {"timeperiod": 10, "nbdev": 1.0}), ("obv_flow", {"window": 24}), ("candle_shape", {}),
                   ("price_position", {"window": 12})]


def _hard_candles(T: int = 3000, A: int = 3, seed: int = 5) -> np.ndarray:
    """Late listing, dropped bars, a zero-volume stretch and a flat stretch (where TA-Lib's variance
    re-centres its running sums), over more than 32 x period bars (its periodic re-centring)."""
    x = random_ohlcv(T, A, seed)
    k = T // 10
    x[:k, 1] = np.nan
    x[3 * k:3 * k + 10, 2] = np.nan
    x[[5 * k, 5 * k + 2, 7 * k], 1] = np.nan
    x[5 * k:5 * k + 100, 0, 4] = 0.0
    x[6 * k:6 * k + 100, 0, :4] = x[6 * k - 1, 0, 3]
    return x


@pytest.mark.parametrize("name,params", BUILT_IN_CUSTOM)
def test_built_in_custom_factors_online_are_bit_identical(name, params):
    """The incremental state of each built-in equals the offline function over the whole series, in
    float64 (before normalisation), at every bar of every asset."""
    from factorgym.data_layer.factors.base import CandlePanel, factor_from_config
    from factorgym.data_layer.factors.custom import CustomIncremental

    x = _hard_candles()
    symbols = [f"S{a}/USD" for a in range(x.shape[1])]
    panel = CandlePanel.from_arrays(np.arange(len(x), dtype=np.int64) * HOUR, x, symbols)
    factor = factor_from_config({"kind": "custom", "name": name, "params": params})
    offline = factor.compute(panel)
    online = factor.online(symbols)
    rows = np.stack([online.update(t * HOUR, x[t]) for t in range(len(x))])
    np.testing.assert_array_equal(rows, offline)
    assert np.isfinite(offline).mean() > 0.8
    assert isinstance(online, CustomIncremental)


def test_all_built_ins_and_talib_through_the_tensor_with_gaps_are_bit_identical(tmp_path):
    """Every built-in custom factor and a mix of TA-Lib ones, through build_tensor (gap policy,
    warm-up, expanding normalisation, cross-sectional rank) and back online: equal rows."""
    x = _hard_candles(1500, 3, seed=11)
    candles = frames(x)
    fs = {"factors": [{"kind": "custom", "name": n, "params": p} for n, p in BUILT_IN_CUSTOM]
          + [{"kind": "talib", "name": "STDDEV", "params": {"timeperiod": 24}},
             {"kind": "talib", "name": "BBANDS", "params": {"timeperiod": 20}, "outputs": ["upperband"], "scale": "rel_close"},
             {"kind": "talib", "name": "MACD", "scale": "close"}, {"kind": "talib", "name": "ADX"},
             {"kind": "custom", "name": "log_return", "params": {"periods": 4}, "alias": "r4", "cross_sectional": "rank"}],
          "normalise": {"method": "expanding", "min_periods": 50, "clip": 5.0}}
    tensor = FactorTensor.load(build_tensor_from_candles(candles, "1h", fs).save(tmp_path / "t"))
    rows = _replay(tensor, candles)
    np.testing.assert_array_equal(rows.astype(np.float32), tensor.features)


def test_train_normalisation_and_cross_section_multi_asset(tmp_path):
    x = random_ohlcv(600, 4, seed=9)
    x[:120, 1] = np.nan
    x[300:304, 2] = np.nan
    candles = frames(x)
    fs = {
        "factors": [
            {"kind": "talib", "name": "MACD", "scale": "close"},
            {"kind": "talib", "name": "ADX"},
            {"kind": "custom", "name": "log_return", "params": {"periods": 3}, "cross_sectional": "rank"},
            {"kind": "custom", "name": "volume_zscore", "cross_sectional": "zscore", "normalise": False},
        ],
        "normalise": {"method": "train", "fit_end": 400 * 3_600_000, "clip": 4.0},
    }
    tensor = FactorTensor.load(build_tensor_from_candles(candles, "1h", fs).save(tmp_path / "t"))
    assert tensor.meta["normalisation"]["stats"]["mean"]
    rows = _replay(tensor, candles)
    np.testing.assert_array_equal(rows.astype(np.float32), tensor.features)


@pytest.mark.qlib
def test_qlib_factors_online_equal_offline(btc_hourly, tmp_path):
    pytest.importorskip("qlib")
    if "qlib" not in registered_kinds():
        pytest.skip("qlib adapter not present")
    fs = {"factors": [{"kind": "qlib", "expr": "Mean($close, 20) / $close", "name": "ma20"},
                      {"kind": "qlib", "expr": "Corr($close, Log($volume+1), 24)", "name": "corr_cv_24"},
                      {"kind": "talib", "name": "RSI"}],
          "normalise": {"method": "expanding", "min_periods": 50}}
    candles = {k: v.iloc[:3000].reset_index(drop=True) for k, v in btc_hourly.items()}
    tensor = build_tensor_from_candles(candles, "1h", fs)
    rows = _replay(tensor, candles)
    assert np.abs(rows - tensor.features).max() <= 1e-5


QUICKSTART_QLIB = ["Corr($close, Log($volume+1), 24)", "Slope($close, 48)/$close", "Rsquare($close, 48)",
                   "($close - Min($low, 72))/(Max($high, 72) - Min($low, 72) + 1e-12)",
                   "Cov($close, $volume, 10)", "Var($close, 9) + Sum($volume, 7) - Mean($close, 5)", "Abs($close - $open)"]


@pytest.mark.qlib
def test_qlib_direct_operators_keep_the_bits_and_skip_qlib_load(monkeypatch):
    """The quickstart's expressions (and Cov/Var/Sum/Mean/Abs) are computed from pandas' rolling kernels
    and numpy's ufuncs without Qlib's load, and give the per-asset Qlib evaluation's bits."""
    pytest.importorskip("qlib")
    from factorgym.data_layer.factors import qlib_online as qo
    from factorgym.data_layer.factors.qlib_factors import QlibExpressionFactor

    f = QlibExpressionFactor(QUICKSTART_QLIB)
    plan = qo.EvalPlan(f._objs)
    computed = [(k, m, d) for k, m, d in zip(plan.keys, plan.modes, plan.direct) if m not in ("feature", "kernel")]
    assert all(d is not None for _, _, d in computed), computed
    assert {d for _, _, d in computed} == {"ufunc1", "ufunc2", "roll", "cov", "corr"} and not plan.uses_qlib
    for seed in (7, 8):  # other probe windows than verify_plan's
        win = qo.probe_windows(f.history, seed)
        for take in (slice(None), [3], [5, 0, 2]):
            np.testing.assert_array_equal(plan.evaluate(win[:, take]), qo.evaluate_per_asset(f._objs, win[:, take]))
    # a direct path slightly off (1e-6 relative) is caught by the plan check (the factor then falls back to Qlib)
    real = qo._as_float64
    monkeypatch.setattr(qo, "_as_float64", lambda x: real(x) * (1 + 1e-6))
    assert qo.verify_plan(qo.EvalPlan(f._objs), f._objs, f.history)


@pytest.mark.qlib
def test_quickstart_qlib_rows_online_equal_offline(btc_hourly):
    pytest.importorskip("qlib")
    fs = {"factors": [{"kind": "qlib", "expr": QUICKSTART_QLIB, "name": [f"q{i}" for i in range(len(QUICKSTART_QLIB))]}],
          "normalise": {"method": "none"}}
    candles = {k: v.iloc[:700].reset_index(drop=True) for k, v in btc_hourly.items()}
    tensor = build_tensor_from_candles(candles, "1h", fs)
    rows = _replay(tensor, candles)
    off = tensor.features.astype(np.float64)
    scale = np.maximum(np.abs(off), 1.0)
    assert np.isfinite(off).mean() > 0.9 and (np.abs(rows - off) / scale).max() <= 1e-5


def test_a_nan_volume_mid_series_leaves_the_other_assets_exact(caplog):
    """A non-finite input after a series started (TA-Lib's stream handles refuse it) poisons that
    asset's routine, with a warning; the rows go on, and the other assets' stay bit-identical."""
    from factorgym.data_layer.factors.base import CandlePanel, factor_from_config

    x = _hard_candles(600, 3, seed=3)
    x[400, 0, 4] = np.nan
    panel = CandlePanel.from_arrays(np.arange(len(x), dtype=np.int64) * HOUR, x, ["S0/USD", "S1/USD", "S2/USD"])
    for name, params in BUILT_IN_CUSTOM:
        factor = factor_from_config({"kind": "custom", "name": name, "params": params})
        online = factor.online(panel.symbols)
        rows = np.stack([online.update(t * HOUR, x[t]) for t in range(len(x))])
        np.testing.assert_array_equal(rows[:, 1:], factor.compute(panel)[:, 1:])
    assert "non-finite input" in caplog.text
