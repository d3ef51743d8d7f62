"""Normalisation and cross-sectional transforms against pandas/scipy, and online == offline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import rankdata

from factorgym.data_layer.factors.normalise import (
    NormaliseConfig,
    OnlineNormaliser,
    fit_train_stats,
    normalise_offline,
)
from factorgym.data_layer.factors.transforms import cross_sectional
from factorgym.errors import ConfigError


def _data(T=300, A=2, F=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(5, 2, (T, A, F)) * np.array([1, 100, 1e-3])[:F]
    x[:20, 1, :] = np.nan  # late listing
    x[[50, 51, 120], 0, 1] = np.nan  # holes
    return x


def test_expanding_matches_pandas():
    x = _data()
    cfg = NormaliseConfig(method="expanding", min_periods=10, clip=None)
    z = normalise_offline(x, cfg)
    for a in range(2):
        for f in range(3):
            s = pd.Series(x[:, a, f]).dropna()
            ref = (s - s.expanding(10).mean()) / s.expanding(10).std(ddof=0)
            got = pd.Series(z[:, a, f]).dropna()
            np.testing.assert_allclose(got.to_numpy(), ref.dropna().to_numpy(), rtol=1e-8)
            assert np.isnan(z[np.isnan(x[:, a, f]), a, f]).all()


def test_rolling_matches_pandas_over_available_values():
    x = _data()
    cfg = NormaliseConfig(method="rolling", window=30, min_periods=30, clip=None)
    z = normalise_offline(x, cfg)
    s = pd.Series(x[:, 0, 1]).dropna()
    ref = ((s - s.rolling(30).mean()) / s.rolling(30).std(ddof=0)).dropna()
    np.testing.assert_allclose(pd.Series(z[:, 0, 1]).dropna().to_numpy(), ref.to_numpy(), rtol=1e-7)


def test_train_fit_uses_fit_range_only_and_clip():
    x = _data()
    ts = np.arange(300, dtype=np.int64) * 3_600_000
    cfg = NormaliseConfig(method="train", fit_end=int(ts[150]), clip=2.0)
    valid = np.isfinite(x[..., 0])
    stats = fit_train_stats(x, ts, valid, cfg)
    train = x[:150].reshape(-1, 3)
    np.testing.assert_allclose(stats["mean"], np.nanmean(train, axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats["std"], np.nanstd(train, axis=0), rtol=1e-12)
    y = x.copy()
    y[150:] *= 7.0  # later bars must not move the statistics
    assert fit_train_stats(y, ts, valid, cfg) == stats
    z = normalise_offline(x, cfg, stats)
    assert np.nanmax(np.abs(z)) == 2.0
    per = fit_train_stats(x, ts, valid, NormaliseConfig(method="train", fit_end=int(ts[150]), per_asset=True))
    np.testing.assert_allclose(per["mean"][1], np.nanmean(x[:150, 1], axis=0), rtol=1e-12)


def test_flat_history_gives_zero_not_nan():
    x = np.ones((50, 1, 1))
    z = normalise_offline(x, NormaliseConfig(method="expanding", min_periods=5))
    assert np.isnan(z[:4]).all() and (z[4:] == 0).all()


@pytest.mark.parametrize("cfg", [
    NormaliseConfig(method="expanding", min_periods=7, clip=3.0),
    NormaliseConfig(method="rolling", window=25, min_periods=5, clip=None),
    NormaliseConfig(method="none"),
])
def test_online_equals_offline_bit_for_bit(cfg):
    x = _data(seed=1)
    off = normalise_offline(x, cfg)
    on = OnlineNormaliser(cfg, 2, 3)
    rows = np.stack([on.update(x[t]) for t in range(len(x))])
    np.testing.assert_array_equal(rows, off)


def test_online_train_uses_saved_stats():
    x = _data(seed=2)
    ts = np.arange(300, dtype=np.int64) * 3_600_000
    cfg = NormaliseConfig(method="train", fit_end=int(ts[100]))
    stats = fit_train_stats(x, ts, np.isfinite(x[..., 0]), cfg)
    on = OnlineNormaliser(cfg, 2, 3, stats)
    np.testing.assert_array_equal(np.stack([on.update(r) for r in x]), normalise_offline(x, cfg, stats))
    with pytest.raises(ConfigError, match="saved statistics"):
        OnlineNormaliser(cfg, 2, 3)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 40), st.floats(-1e4, 1e4), st.floats(1e-3, 1e3))
def test_property_online_offline_rolling_and_expanding(seed, window, loc, scale):
    rng = np.random.default_rng(seed)
    x = rng.normal(loc, scale, (120, 2, 2))
    x[rng.random((120, 2, 2)) < 0.2] = np.nan
    for cfg in (NormaliseConfig(method="rolling", window=window, min_periods=2),
                NormaliseConfig(method="expanding", min_periods=3)):
        on = OnlineNormaliser(cfg, 2, 2)
        np.testing.assert_array_equal(np.stack([on.update(r) for r in x]), normalise_offline(x, cfg))


@pytest.mark.parametrize("d, match", [
    ({"method": "zscore"}, "not one of"),
    ({"method": "rolling", "window": 10, "min_periods": 20}, "exceeds window"),
    ({"method": "train"}, "fit_end"),
    ({"method": "expanding", "clip": -1}, "clip"),
    ({"method": "expanding", "windw": 3}, "unknown key 'windw'"),
    ({"window": 3}, "needs 'method'"),
])
def test_bad_normalise_config(d, match):
    with pytest.raises(ConfigError, match=match):
        NormaliseConfig.from_dict(d)


def test_cross_sectional_rank_and_zscore():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6, 2)).round(1)  # rounding makes ties
    x[3, 2, 0] = np.nan
    r = cross_sectional(x, "rank")
    for t in range(40):
        for k in range(2):
            ok = np.isfinite(x[t, :, k])
            ref = (rankdata(x[t, ok, k]) - 1) / (ok.sum() - 1)
            np.testing.assert_allclose(r[t, ok, k], ref)
    assert np.isnan(r[3, 2, 0])
    z = cross_sectional(x, "zscore")
    ok = np.isfinite(x[5, :, 1])
    np.testing.assert_allclose(z[5, ok, 1], (x[5, ok, 1] - x[5, ok, 1].mean()) / x[5, ok, 1].std())
    # a row [A, k] gives the same as the block's row (the online path)
    np.testing.assert_array_equal(cross_sectional(x[7], "rank"), r[7])
    np.testing.assert_array_equal(cross_sectional(x[7], "zscore"), z[7])
    single = np.full((1, 3, 1), np.nan)
    single[0, 0, 0] = 2.0
    assert cross_sectional(single, "rank")[0, 0, 0] == 0.5
    with pytest.raises(ConfigError):
        cross_sectional(x, "pct")
