"""Online == offline: OnlineFactors rebuilt from a saved tensor's meta, fed the shared hourly BTC
file one bar at a time, reproduces every tensor row (max abs diff <= 1e-5)."""

from __future__ import annotations

import numpy as np
import pytest

from _factor_data import frames, random_ohlcv
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
    diff = np.abs(rows - np.asarray(tensor.features, dtype=np.float64))
    assert diff.max() <= 1e-5, (tensor.feature_names[int(np.argmax(diff.max(axis=(0, 1))))], diff.max())
    # TA-Lib stream handles and the normaliser are bit-exact; custom window recomputes of rolling
    # TA-Lib sums (bb_pctb) may differ in the last bits, hence "almost all" identical
    assert (rows.astype(np.float32) == tensor.features).mean() > 0.999


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
