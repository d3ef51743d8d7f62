"""Custom factors and every normaliser mode against values computed another way (pandas over each
asset's own available bars, or by hand), offline AND online, on panels with missing bars: not only
online == offline. Includes a user factor with a real look-back and two named outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from _factor_data import random_panel
from factorgym.data_layer.factors.base import factor_from_config
from factorgym.data_layer.factors.custom import custom_factor
from factorgym.data_layer.factors.normalise import NormaliseConfig, OnlineNormaliser, fit_train_stats, normalise_offline


def _frame(panel, a):
    """One asset's available bars (rows where it has a close), as pandas Series, and those rows."""
    rows = np.flatnonzero(np.isfinite(panel.close[:, a]))
    cols = {f: pd.Series(getattr(panel, f)[rows, a]) for f in ("open", "high", "low", "close", "volume")}
    return rows, cols


# each: config, number of leading NaN rows of an asset's series (its warm-up), pandas reference
def _log_return(s, periods=3):
    return [np.log(s["close"] / s["close"].shift(periods))]


def _realized_vol(s, window=10):
    return [np.log(s["close"]).diff().rolling(window).std(ddof=0)]


def _volume_zscore(s, window=12):
    lv = np.log1p(s["volume"])
    sd = lv.rolling(window).std(ddof=0)
    z = (lv - lv.rolling(window).mean()) / sd
    return [z.mask(sd <= 1e-9, 0.0)]


def _bb_pctb(s, timeperiod=10, nbdev=1.5):
    c = s["close"]
    mid, sd = c.rolling(timeperiod).mean(), c.rolling(timeperiod).std(ddof=0)
    up, lo = mid + nbdev * sd, mid - nbdev * sd
    return [((c - lo) / (up - lo)).mask(up - lo <= 0, 0.5)]


def _obv_flow(s, window=6):
    c, v = s["close"], s["volume"]
    flow = (np.sign(c.diff()) * v).rolling(window).sum()
    vol = v.where(c.diff().notna()).rolling(window).sum()
    return [(flow / vol).mask(vol <= 0, 0.0)]


def _price_position(s, window=8):
    hi, lo = s["high"].rolling(window).max(), s["low"].rolling(window).min()
    return [((s["close"] - lo) / (hi - lo)).mask(hi - lo <= 0, 0.5)]


def _candle_shape(s):
    o, h, lo, c = s["open"], s["high"], s["low"], s["close"]
    return [(h - lo) / c, (c - o) / c, (h - np.maximum(o, c)) / c, (np.minimum(o, c) - lo) / c]


@custom_factor("test_mom_and_range", warmup=lambda p: p["k"], outputs=["momentum", "range"])
def _mom_and_range(open, high, low, close, volume, k=4):
    """Two outputs of different look-backs: close / close k bars ago - 1; mean (high - low) / close
    over the last k bars (k - 1 would do; k is declared)."""
    mom = np.full(len(close), np.nan)
    mom[k:] = close[k:] / close[:-k] - 1.0
    return np.column_stack([mom, pd.Series((high - low) / close).rolling(k).mean().to_numpy()])


def _mom_and_range_ref(s, k=5):
    c = s["close"]
    return [c / c.shift(k) - 1.0, ((s["high"] - s["low"]) / c).rolling(k).mean()]


CASES = [
    ({"kind": "custom", "name": "log_return", "params": {"periods": 3}}, ["log_return_3"], 3, _log_return),
    ({"kind": "custom", "name": "realized_vol", "params": {"window": 10}}, ["realized_vol_10"], 10, _realized_vol),
    ({"kind": "custom", "name": "volume_zscore", "params": {"window": 12}}, ["volume_zscore_12"], 11, _volume_zscore),
    ({"kind": "custom", "name": "bb_pctb", "params": {"timeperiod": 10, "nbdev": 1.5}}, ["bb_pctb_10_1.5"], 9, _bb_pctb),
    ({"kind": "custom", "name": "obv_flow", "params": {"window": 6}}, ["obv_flow_6"], 6, _obv_flow),
    ({"kind": "custom", "name": "price_position", "params": {"window": 8}}, ["price_position_8"], 7, _price_position),
    ({"kind": "custom", "name": "candle_shape"},
     ["candle_shape.range", "candle_shape.body", "candle_shape.upper_shadow", "candle_shape.lower_shadow"], 0, _candle_shape),
    ({"kind": "custom", "name": "test_mom_and_range", "params": {"k": 5}},
     ["test_mom_and_range_5.momentum", "test_mom_and_range_5.range"], 5, _mom_and_range_ref),
]


@pytest.mark.parametrize("cfg, names, warmup, reference", CASES, ids=[c[0]["name"] for c in CASES])
def test_custom_factor_offline_and_online_against_pandas(cfg, names, warmup, reference):
    panel = random_panel(T=160, A=3, seed=11)  # asset 1 lists late, asset 2 misses bars
    f = factor_from_config(cfg)
    assert f.names == names and f.warmup == warmup
    offline = f.compute(panel)
    online = f.online(panel.symbols)
    bars = panel.ohlcv()
    online_rows = np.stack([online.update(int(t), bars[i]) for i, t in enumerate(panel.timestamps)])
    for a in range(panel.n_assets):
        rows, s = _frame(panel, a)
        want = np.full((panel.n_bars, len(names)), np.nan)
        for k, col in enumerate(reference(s, **cfg.get("params", {}))):
            want[rows, k] = np.asarray(col, dtype=np.float64)
        want[rows[:warmup]] = np.nan  # the declared warm-up: not valid by contract
        assert np.isnan(want[rows[warmup:]]).sum() == 0, "the reference must be finite after the warm-up"
        for got, path in ((offline[:, a], "offline"), (online_rows[:, a], "online")):
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, equal_nan=True,
                                       err_msg=f"{cfg['name']} {path}, asset {a}")


# ---------------------------------------------------------------------- normalisers
def _x(T=240, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(5, 2, (T, 2, 2)) * np.array([1.0, 1e4])
    x[:30, 1] = np.nan  # late listing
    x[rng.random((T, 2, 2)) < 0.05] = np.nan  # holes
    x[60:90, 0, 0] = 7.0  # a flat stretch: std 0 -> z 0 in a rolling window
    return x


def _pandas_z(x, cfg):
    """The z-score of each column over its own non-NaN values (pandas), then clip; NaN stays NaN."""
    out = np.full_like(x, np.nan)
    for a in range(x.shape[1]):
        for k in range(x.shape[2]):
            s = pd.Series(x[:, a, k]).dropna()
            win = s.expanding(cfg.min_periods) if cfg.method == "expanding" else s.rolling(cfg.window, cfg.min_periods)
            mean, sd = win.mean(), win.std(ddof=0)
            z = ((s - mean) / sd).mask(sd.notna() & (sd <= 1e-12 * np.maximum(1.0, s.abs().max())), 0.0)
            if cfg.clip is not None:
                z = z.clip(-cfg.clip, cfg.clip)
            out[s.index, a, k] = z.to_numpy()
    return out


@pytest.mark.parametrize("cfg", [
    NormaliseConfig(method="expanding", min_periods=10, clip=None),
    NormaliseConfig(method="expanding", min_periods=1, clip=1.5),
    NormaliseConfig(method="rolling", window=20, min_periods=20, clip=None),
    NormaliseConfig(method="rolling", window=25, min_periods=6, clip=2.0),
], ids=["expanding", "expanding-clip", "rolling", "rolling-short-min-clip"])
def test_normaliser_offline_and_online_against_pandas(cfg):
    x = _x()
    want = _pandas_z(x, cfg)
    online = OnlineNormaliser(cfg, 2, 2)
    for got, path in ((normalise_offline(x, cfg), "offline"), (np.stack([online.update(r) for r in x]), "online")):
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-7, equal_nan=True, err_msg=path)
    assert np.isfinite(want).sum() > 300


@pytest.mark.parametrize("per_asset", [False, True])
def test_train_normaliser_against_hand_statistics(per_asset):
    x = _x()
    ts = np.arange(len(x), dtype=np.int64) * 3_600_000
    cfg = NormaliseConfig(method="train", fit_start=int(ts[10]), fit_end=int(ts[150]), clip=2.5, per_asset=per_asset)
    valid = np.isfinite(x[..., 0])
    valid[40:45, 0] = False  # bars marked unusable are left out of the fit
    stats = fit_train_stats(x, ts, valid, cfg)
    fit = np.where(valid[10:150, :, None], x[10:150], np.nan)
    if per_asset:
        mean, std = np.nanmean(fit, axis=0), np.nanstd(fit, axis=0)
    else:
        flat = fit.reshape(-1, 2)
        mean, std = np.nanmean(flat, axis=0), np.nanstd(flat, axis=0)
    np.testing.assert_allclose(stats["mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(stats["std"], std, rtol=1e-12)
    assert stats["fit_rows"] == [10, 150]
    want = np.clip((x - mean) / std, -2.5, 2.5)
    online = OnlineNormaliser(cfg, 2, 2, stats)
    for got, path in ((normalise_offline(x, cfg, stats), "offline"), (np.stack([online.update(r) for r in x]), "online")):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, equal_nan=True, err_msg=path)
    assert np.nanmax(np.abs(want)) == 2.5


def test_none_normaliser_is_the_identity_and_flat_history_is_zero():
    x = _x()
    assert normalise_offline(x, NormaliseConfig(method="none")) is x
    np.testing.assert_array_equal(OnlineNormaliser(NormaliseConfig(method="none"), 2, 2).update(x[5]), x[5])
    flat = np.full((12, 1, 1), 3.25)
    z = normalise_offline(flat, NormaliseConfig(method="rolling", window=4, min_periods=3))
    assert np.isnan(z[:2]).all() and (z[2:] == 0.0).all()
    # by hand: expanding, min_periods 2, values 1, 3, 2 -> z = nan, (3 - 2) / 1 = 1, (2 - 2) / sqrt(2/3) = 0
    z = normalise_offline(np.array([1.0, 3.0, 2.0, 6.0]).reshape(4, 1, 1), NormaliseConfig(method="expanding", min_periods=2, clip=None))
    assert np.isnan(z[0, 0, 0]) and z[1:, 0, 0] == pytest.approx([1.0, 0.0, (6 - 3) / np.sqrt(3.5)], abs=1e-12)
