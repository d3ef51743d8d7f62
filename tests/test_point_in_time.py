"""Point in time: change every candle after bar t; every feature row <= t must stay the same.

Checked for each adapter (TA-Lib, custom, Qlib when installed), for the cross-sectional
transforms, for every normalisation method and for the whole tensor build."""

from __future__ import annotations

import numpy as np
import pytest
import talib

from _factor_data import frames, random_ohlcv
from factorgym.data_layer.build import build_tensor_from_candles
from factorgym.data_layer.factors.base import CandlePanel, factor_from_config, registered_kinds
from factorgym.data_layer.factors.normalise import NormaliseConfig, fit_train_stats, normalise_offline
from factorgym.data_layer.factors.transforms import cross_sectional

T, CUTS = 400, (150, 260, 398)


def _perturb(x: np.ndarray, t: int, seed: int = 0) -> np.ndarray:
    """Every candle after row t changed (prices scaled per field, volume redrawn, one bar removed)."""
    rng = np.random.default_rng(seed + t)
    y = x.copy()
    y[t + 1 :, :, :4] *= rng.uniform(0.5, 1.5, y[t + 1 :, :, :4].shape)
    y[t + 1 :, :, 1] = np.maximum(y[t + 1 :, :, 1], y[t + 1 :, :, [0, 3]].max(axis=-1))
    y[t + 1 :, :, 2] = np.minimum(y[t + 1 :, :, 2], y[t + 1 :, :, [0, 3]].min(axis=-1))
    y[t + 1 :, :, 4] = rng.lognormal(3, 1, y[t + 1 :, :, 4].shape)
    if t + 2 < len(y):
        y[t + 2, 0] = np.nan  # a missing bar in the future
    return y


def _panel(x):
    return CandlePanel.from_arrays(np.arange(len(x), dtype=np.int64) * 3_600_000, x, [f"S{a}/USD" for a in range(x.shape[1])])


def _base():
    x = random_ohlcv(T, 3, seed=11)
    x[:60, 1] = np.nan
    x[[100, 101], 2] = np.nan
    return x


TALIB = ["RSI", "MACD", "BBANDS", "ADX", "STOCH", "MFI", "OBV", "SAR", "HT_TRENDLINE", "KAMA", "CDLENGULFING",
         "LINEARREG_SLOPE", "NATR", "ULTOSC", "AROON", "T3", "TEMA", "ADOSC", "MAMA", "SUPERTREND"]
CUSTOM = [{"name": "log_return", "params": {"periods": 5}}, {"name": "realized_vol", "params": {"window": 12}},
          {"name": "volume_zscore"}, {"name": "bb_pctb"}, {"name": "obv_flow"}, {"name": "candle_shape"},
          {"name": "price_position"}]


def _check_factor(cfg):
    x = _base()
    f = factor_from_config(cfg)
    ref = f.compute(_panel(x))
    for t in CUTS:
        out = f.compute(_panel(_perturb(x, t)))
        np.testing.assert_array_equal(out[: t + 1], ref[: t + 1], err_msg=f"{cfg} row <= {t} changed")
        assert not np.array_equal(out[t + 1 :], ref[t + 1 :], equal_nan=True) or t + 1 == T  # the perturbation bites


@pytest.mark.parametrize("name", TALIB)
def test_talib(name):
    assert name in talib.get_functions()
    _check_factor({"kind": "talib", "name": name})


@pytest.mark.parametrize("cfg", CUSTOM, ids=lambda c: c["name"])
def test_custom(cfg):
    _check_factor({"kind": "custom", **cfg})


@pytest.mark.qlib
@pytest.mark.parametrize("expr", ["Mean($close, 10) / $close", "Corr($close, Log($volume+1), 12)",
                                  "Ref($close, 3) / $close - 1", "Std($close, 20) / $close"])
def test_qlib(expr):
    pytest.importorskip("qlib")
    if "qlib" not in registered_kinds():
        pytest.skip("qlib adapter not present")
    _check_factor({"kind": "qlib", "expr": expr, "name": "q"})


@pytest.mark.parametrize("method", ["rank", "zscore"])
def test_cross_sectional(method):
    x = _base()
    ref = cross_sectional(x[..., 3][..., None], method)
    for t in CUTS:
        out = cross_sectional(_perturb(x, t)[..., 3][..., None], method)
        np.testing.assert_array_equal(out[: t + 1], ref[: t + 1])


@pytest.mark.parametrize("cfg", [NormaliseConfig(method="expanding", min_periods=5),
                                 NormaliseConfig(method="rolling", window=30, min_periods=5, clip=None)])
def test_normalisation_from_the_past(cfg):
    x = np.log(_base())
    ref = normalise_offline(x, cfg)
    for t in CUTS:
        out = normalise_offline(np.log(_perturb(_base(), t)), cfg)
        np.testing.assert_array_equal(out[: t + 1], ref[: t + 1])


def test_train_normalisation_ignores_bars_after_the_fit_range():
    x = np.log(_base())
    ts = np.arange(T, dtype=np.int64) * 3_600_000
    cfg = NormaliseConfig(method="train", fit_end=int(ts[200]))
    valid = np.isfinite(x[..., 3])
    ref = normalise_offline(x, cfg, fit_train_stats(x, ts, valid, cfg))
    for t in (199, 260, 398):  # perturbing after the fit range changes no row up to t
        y = np.log(_perturb(_base(), t))
        out = normalise_offline(y, cfg, fit_train_stats(y, ts, np.isfinite(y[..., 3]), cfg))
        np.testing.assert_array_equal(out[: t + 1], ref[: t + 1])


def test_whole_build():
    fs = {"factors": [{"kind": "talib", "name": "MACD", "scale": "close"}, {"kind": "talib", "name": "MFI"},
                      {"kind": "custom", "name": "log_return", "cross_sectional": "rank"},
                      {"kind": "custom", "name": "realized_vol"}],
          "normalise": {"method": "expanding", "min_periods": 20, "clip": 5.0}}
    x = _base()
    ref = build_tensor_from_candles(frames(x), "1h", fs)
    for t in CUTS:
        out = build_tensor_from_candles(frames(_perturb(x, t)), "1h", fs)
        k = t + 1 - ref.meta["dropped_warmup_rows"]
        assert out.timestamps[0] == ref.timestamps[0]
        np.testing.assert_array_equal(out.features[:k], ref.features[:k])
        np.testing.assert_array_equal(out.tradable[:k], ref.tradable[:k])
        np.testing.assert_array_equal(out.prices[:k], ref.prices[:k])
