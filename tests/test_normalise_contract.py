"""Normalisation's contract, function by function (data_layer/factors/normalise.py): the documented
defaults, every validation with its exact one-line message and the first accepted / first refused
value of each bound, the z-scores of every method worked by hand on a few bars (NaN and inf skipped,
the first value's shift against cancellation, the flat threshold on both sides, both clip bounds),
the train statistics' fit range, mask and shapes, dtypes, and online == offline for every method.
Independent answers: numbers worked by hand, plain numpy, pandas."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from factorgym.data_layer.factors.normalise import (
    METHODS,
    NormaliseConfig,
    OnlineNormaliser,
    fit_train_stats,
    normalise_offline,
)
from factorgym.errors import ConfigError

H = 3_600_000


def _col(values, **cfg) -> np.ndarray:
    """z-scores of one series (a [T, 1, 1] block) under ``cfg`` (clip off unless given)."""
    cfg.setdefault("clip", None)
    x = np.asarray(values, dtype=np.float64).reshape(-1, 1, 1)
    return normalise_offline(x, NormaliseConfig(**cfg))[:, 0, 0]


def _online(x: np.ndarray, cfg: NormaliseConfig, stats=None) -> np.ndarray:
    on = OnlineNormaliser(cfg, x.shape[1], x.shape[2], stats)
    return np.stack([on.update(row) for row in x])


# --------------------------------------------------------------------------- configuration


def test_the_documented_defaults():
    cfg = NormaliseConfig()
    assert (cfg.method, cfg.window, cfg.min_periods, cfg.clip, cfg.fit_start, cfg.fit_end, cfg.per_asset) == \
        ("expanding", 720, 100, 5.0, None, None, False)
    assert METHODS == ("none", "expanding", "rolling", "train")


@pytest.mark.parametrize("d", [None, {}])
def test_no_normalise_section_means_method_none_with_the_other_defaults(d):
    assert NormaliseConfig.from_dict(d) == dataclasses.replace(NormaliseConfig(), method="none")


@pytest.mark.parametrize("kwargs, msg", [
    ({"method": "zscore"}, "normalise.method 'zscore' is not one of ('none', 'expanding', 'rolling', 'train')"),
    ({"method": "Rolling"}, "normalise.method 'Rolling' is not one of ('none', 'expanding', 'rolling', 'train')"),
    ({"window": 1}, "normalise.window must be >= 2 bars, got 1"),
    ({"window": -5}, "normalise.window must be >= 2 bars, got -5"),
    ({"min_periods": 0}, "normalise.min_periods must be >= 1, got 0"),
    ({"method": "rolling", "window": 10, "min_periods": 11}, "normalise.min_periods (11) exceeds window (10)"),
    ({"clip": 0.0}, "normalise.clip must be > 0 or null, got 0.0"),
    ({"clip": -2}, "normalise.clip must be > 0 or null, got -2"),
    ({"clip": float("nan")}, "normalise.clip must be > 0 or null, got nan"),
    ({"method": "train"}, "normalise.method 'train' needs fit_end (end of the training range, a date)"),
    # (method names read from a file: new str objects, not the literals of the code)
    ({"method": "".join(["roll", "ing"]), "window": 10, "min_periods": 11}, "normalise.min_periods (11) exceeds window (10)"),
    ({"method": "".join(["tr", "ain"])}, "normalise.method 'train' needs fit_end (end of the training range, a date)"),
], ids=["method", "method_case", "window_1", "window_negative", "min_periods_0", "min_periods_past_window", "clip_0",
        "clip_negative", "clip_nan", "train_without_fit_end", "min_periods_past_window_read", "train_without_fit_end_read"])
def test_each_refusal_is_one_line_naming_the_value(kwargs, msg):
    with pytest.raises(ConfigError) as e:
        NormaliseConfig(**kwargs)
    assert str(e.value) == msg


@pytest.mark.parametrize("kwargs", [
    {"window": 2, "min_periods": 1}, {"method": "rolling", "window": 2, "min_periods": 2},
    {"method": "rolling", "window": 10, "min_periods": 10}, {"min_periods": 1},
    {"method": "expanding", "window": 10, "min_periods": 50},  # (the window is the rolling method's only)
    {"clip": 1e-9}, {"clip": None}, {"method": "train", "fit_end": 0}, {"method": "none", "min_periods": 900},
    # (min_periods past the window is refused for 'rolling' only: the other methods do not use the window)
    {"method": "train", "fit_end": 0, "window": 10, "min_periods": 50}, {"method": "none", "window": 10, "min_periods": 50},
])
def test_the_first_accepted_value_of_each_bound(kwargs):
    cfg = NormaliseConfig(**kwargs)
    assert all(getattr(cfg, k) == v for k, v in kwargs.items())


def test_from_dict_refuses_settings_without_a_method_and_unknown_keys_in_one_line():
    with pytest.raises(ConfigError) as e:
        NormaliseConfig.from_dict({"window": 3, "clip": 2.0})
    assert str(e.value) == ("normalise needs 'method' (one of ('none', 'expanding', 'rolling', 'train')); "
                            "got keys ['clip', 'window']")
    with pytest.raises(ConfigError) as e:
        NormaliseConfig.from_dict({"method": "rolling", "windw": 3})
    assert str(e.value) == ("normalise: unknown key 'windw' (did you mean 'window'?); allowed: clip, fit_end, "
                            "fit_start, method, min_periods, per_asset, window")


@pytest.mark.parametrize("given, ms", [("2024-01-01", 1_704_067_200_000), ("2024-01-01T01:00:00+01:00", 1_704_067_200_000),
                                       (1_704_067_200, 1_704_067_200_000), (1_704_067_200_000, 1_704_067_200_000)])
def test_from_dict_reads_the_fit_range_as_utc_milliseconds(given, ms):
    cfg = NormaliseConfig.from_dict({"method": "train", "fit_start": given, "fit_end": given})
    assert cfg.fit_start == ms and cfg.fit_end == ms
    assert NormaliseConfig.from_dict({"method": "train", "fit_end": given}).fit_start is None


def test_from_dict_does_not_change_the_mapping_it_is_given():
    d = {"method": "train", "fit_end": "2024-01-01"}
    NormaliseConfig.from_dict(d)
    assert d == {"method": "train", "fit_end": "2024-01-01"}


@pytest.mark.parametrize("kwargs, warmup", [
    ({"method": "expanding"}, 99), ({"method": "expanding", "min_periods": 1}, 0),
    ({"method": "rolling", "window": 30, "min_periods": 7}, 6), ({"method": "none", "min_periods": 50}, 0),
    ({"method": "train", "fit_end": 1, "min_periods": 50}, 0),
])
def test_the_extra_warmup_is_min_periods_minus_one_for_the_running_methods_only(kwargs, warmup):
    assert NormaliseConfig(**kwargs).warmup == warmup


# --------------------------------------------------------------------------- running z-scores by hand

X = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]  # all eight: mean 5, population sd 2


def test_expanding_by_hand():
    r2 = 1 / math.sqrt(2)
    np.testing.assert_allclose(_col(X, method="expanding", min_periods=1)[:3], [0.0, 1.0, r2], rtol=1e-12)
    got = _col(X, method="expanding", min_periods=8)
    assert np.isnan(got[:7]).all() and got[7] == pytest.approx(2.0, rel=1e-12)
    got = _col(X, method="expanding", min_periods=3)
    assert np.isnan(got[:2]).all() and got[2] == pytest.approx(r2, rel=1e-12)


def test_rolling_by_hand():
    np.testing.assert_allclose(_col(X, method="rolling", window=2, min_periods=2),
                               [np.nan, 1, 0, 0, 1, 0, 1, 1], rtol=1e-12, atol=1e-15)
    got = _col(X, method="rolling", window=3, min_periods=3)
    np.testing.assert_allclose(got[2:5], [1 / math.sqrt(2), 0.0, math.sqrt(2)], rtol=1e-12, atol=1e-15)
    got = _col(X, method="rolling", window=3, min_periods=1)  # values before the window is full
    np.testing.assert_allclose(got[:2], [0.0, 1.0], rtol=1e-12)
    dec = _col(X[::-1], method="rolling", window=2, min_periods=2)
    np.testing.assert_allclose(dec, [np.nan, -1, -1, 0, -1, 0, 0, -1], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("method", ["expanding", "rolling"])
def test_nan_and_inf_are_skipped_left_nan_and_do_not_count(method):
    got = _col([1.0, np.nan, 3.0, np.inf, 5.0, -np.inf], method=method, window=3, min_periods=2)
    assert np.isnan(got[[0, 1, 3, 5]]).all()
    np.testing.assert_allclose(got[[2, 4]], [1.0, math.sqrt(1.5)], rtol=1e-12)


def test_a_rolling_window_counts_values_not_bars():
    """window 3 over [1, nan, nan, 2, nan, 6]: at the 6 the window is 1, 2, 6 (not the bars since 2)."""
    got = _col([1.0, np.nan, np.nan, 2.0, np.nan, 6.0], method="rolling", window=3, min_periods=3)
    v = np.array([1.0, 2.0, 6.0])
    assert np.isnan(got[:5]).all() and got[5] == pytest.approx((6 - v.mean()) / v.std(), rel=1e-12)


@pytest.mark.parametrize("method", ["expanding", "rolling"])
def test_a_large_level_is_no_cancellation(method):
    """Values 1e9 + noise of sd 1: the z-scores equal pandas' on the de-levelled series to 1e-7 (the
    sums of squares of the raw values would cancel all but a few bits)."""
    rng = np.random.default_rng(3)
    noise = rng.normal(0.0, 1.0, 400)
    got = _col(1e9 + noise, method=method, window=50, min_periods=20)
    s = pd.Series(noise)
    r = s.expanding(20) if method == "expanding" else s.rolling(50, min_periods=20)
    want = ((s - r.mean()) / r.std(ddof=0)).to_numpy()
    np.testing.assert_allclose(got[19:], want[19:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["expanding", "rolling"])
def test_the_flat_threshold_on_both_sides(method):
    """sd 2e-12 (above the 1e-12 threshold) is a spread: z = +1; sd 5e-13 is flat: z = 0."""
    assert _col([0.0, 4e-12], method=method, min_periods=2)[1] == pytest.approx(1.0, rel=1e-9)
    assert _col([0.0, 1e-12], method=method, min_periods=2)[1] == 0.0
    assert _col([0.0, 1e-170], method=method, min_periods=2)[1] == 0.0  # (a spread whose square underflows)
    # at the threshold exactly (sd = 1e-12) flat, as in method 'train'; one bit above it a spread
    assert _col([0.0, 2e-12], method=method, min_periods=2)[1] == 0.0
    assert _col([0.0, 2.0000000000000004e-12], method=method, min_periods=2)[1] == pytest.approx(1.0, rel=1e-9)
    assert (_col([3.0] * 6, method=method, min_periods=1) == 0.0).all()


@pytest.mark.parametrize("method", ["expanding", "rolling"])
def test_both_clip_bounds_and_no_clip(method):
    x = [0.0, 1.0] * 10 + [100.0, -500.0]
    got = _col(x, method=method, window=40, min_periods=2, clip=2.0)
    free = _col(x, method=method, window=40, min_periods=2)
    assert got[20] == 2.0 and got[21] == -2.0 and free[20] > 4.0 and free[21] < -3.0
    np.testing.assert_array_equal(got[:20], free[:20])  # z-scores inside the bounds are left as they are
    assert (np.abs(free[1:20]) <= 1.0).all() and (free[1:20] < 0).any()


def test_each_column_is_normalised_on_its_own():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(60, 2, 3)) * np.array([1e-3, 1.0, 1e3])
    x[rng.random(x.shape) < 0.2] = np.nan
    for cfg in (NormaliseConfig(method="expanding", min_periods=4), NormaliseConfig(method="rolling", window=9, min_periods=3)):
        block = normalise_offline(x, cfg)
        for a in range(2):
            for f in range(3):
                np.testing.assert_array_equal(block[:, a, f], normalise_offline(x[:, a:a + 1, f:f + 1], cfg)[:, 0, 0])


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_other_dtypes_are_normalised_as_float64(dtype):
    x = (np.arange(30) % 7).astype(dtype).reshape(30, 1, 1)
    cfg = NormaliseConfig(method="rolling", window=5, min_periods=2)
    got = normalise_offline(x, cfg)
    assert got.dtype == np.float64 and got.shape == (30, 1, 1)
    np.testing.assert_array_equal(got, normalise_offline(x.astype(np.float64), cfg))


def test_method_none_returns_the_block_itself_offline_and_each_row_online():
    x = np.random.default_rng(0).normal(size=(5, 2, 3))
    cfg = NormaliseConfig(method="none")
    assert normalise_offline(x, cfg) is x
    on = OnlineNormaliser(cfg, 2, 3)
    assert all(on.update(row) is row for row in x)


# --------------------------------------------------------------------------- train


def _train_cfg(**kw):
    return NormaliseConfig(method="train", **{"fit_end": 5 * H, "clip": None, **kw})


def test_the_fit_range_includes_fit_start_and_excludes_fit_end():
    x = np.arange(10, dtype=np.float64).reshape(10, 1, 1) ** 2
    ts = np.arange(10, dtype=np.int64) * H
    ok = np.ones((10, 1), bool)
    stats = fit_train_stats(x, ts, ok, _train_cfg(fit_start=2 * H, fit_end=5 * H))
    fit = np.array([4.0, 9.0, 16.0])
    assert stats["fit_rows"] == [2, 5] and stats["count"] == [3]
    np.testing.assert_allclose(stats["mean"], [fit.mean()], rtol=1e-15)
    np.testing.assert_allclose(stats["std"], [fit.std()], rtol=1e-15)
    between = fit_train_stats(x, ts, ok, _train_cfg(fit_start=2 * H + 1, fit_end=5 * H - 1))
    assert between["fit_rows"] == [3, 5] and between["count"] == [2]
    assert fit_train_stats(x, ts, ok, _train_cfg())["fit_rows"] == [0, 5]


def test_bars_marked_invalid_are_left_out_of_the_fit_even_when_finite():
    x = np.array([1.0, 100.0, 3.0, 5.0]).reshape(4, 1, 1)
    valid = np.array([[True], [False], [True], [True]])
    stats = fit_train_stats(x, np.arange(4, dtype=np.int64) * H, valid, _train_cfg(fit_end=10 * H))
    assert stats["count"] == [3] and stats["mean"] == [3.0]
    np.testing.assert_allclose(stats["std"], [np.std([1.0, 3.0, 5.0])], rtol=1e-15)


def test_a_fit_range_without_valid_bars_is_refused_in_one_line():
    x = np.full((6, 2, 1), np.nan)
    x[4:] = 1.0
    with pytest.raises(ConfigError) as e:
        fit_train_stats(x, np.arange(6, dtype=np.int64) * H, np.ones((6, 2), bool), _train_cfg(fit_end=4 * H))
    assert str(e.value) == ("normalise.method 'train': no valid bars in the fit range [fit_start, fit_end); "
                            "move fit_end later than the warm-up")


def test_pooled_and_per_asset_statistics_by_hand():
    x = np.zeros((2, 2, 2))
    x[:, 0, 0], x[:, 1, 0] = [1.0, 3.0], [5.0, 7.0]  # feature 0: asset 0 {1, 3}, asset 1 {5, 7}
    x[:, 0, 1], x[:, 1, 1] = [2.0, 2.0], [np.nan, 4.0]  # feature 1: asset 0 {2, 2}, asset 1 {4}
    ts = np.arange(2, dtype=np.int64) * H
    pooled = fit_train_stats(x, ts, np.ones((2, 2), bool), _train_cfg())
    assert pooled["count"] == [4, 3] and pooled["mean"] == [4.0, 8 / 3]
    np.testing.assert_allclose(pooled["std"], [math.sqrt(5.0), np.std([2.0, 2.0, 4.0])], rtol=1e-15)
    per = fit_train_stats(x, ts, np.ones((2, 2), bool), _train_cfg(per_asset=True))
    assert per["count"] == [[2, 2], [2, 1]] and per["mean"] == [[2.0, 2.0], [6.0, 4.0]]
    assert per["std"] == [[1.0, 0.0], [1.0, 0.0]]


def test_train_z_scores_by_hand_with_a_flat_feature_nan_and_per_asset_statistics():
    stats = {"mean": [[2.0, 2.0], [6.0, 4.0]], "std": [[1.0, 0.0], [1.0, 0.0]]}
    x = np.array([[[4.0, 9.0], [3.0, np.nan]]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = normalise_offline(x, _train_cfg(per_asset=True), stats)
        clipped = normalise_offline(x, _train_cfg(per_asset=True, clip=1.5), stats)
    np.testing.assert_array_equal(got, [[[2.0, 0.0], [-3.0, np.nan]]])
    np.testing.assert_array_equal(clipped, [[[1.5, 0.0], [-1.5, np.nan]]])


def test_a_train_std_at_the_flat_threshold_is_flat_and_just_above_it_is_a_spread():
    x = np.array([[[1e-12]], [[4e-12]]])
    assert normalise_offline(x, _train_cfg(), {"mean": [0.0], "std": [1e-12]})[0, 0, 0] == 0.0
    np.testing.assert_allclose(normalise_offline(x, _train_cfg(), {"mean": [0.0], "std": [2e-12]})[:, 0, 0],
                               [0.5, 2.0], rtol=1e-12)


@pytest.mark.parametrize("method", ["train", "".join(["tr", "ain"])], ids=["literal", "read_from_a_file"])
def test_train_without_statistics_is_refused_offline_and_online(method):
    """Also for a method name that is a new str object (read from YAML), not the literal of the code."""
    cfg = dataclasses.replace(_train_cfg(), method=method)
    with pytest.raises(ConfigError) as e:
        normalise_offline(np.ones((3, 1, 1)), cfg)
    assert str(e.value) == "normalise.method 'train' needs fitted statistics"
    with pytest.raises(ConfigError) as e:
        OnlineNormaliser(cfg, 1, 1)
    assert str(e.value) == ("normalise.method 'train' online needs the tensor's saved statistics "
                            "(meta['normalisation'])")


# --------------------------------------------------------------------------- online == offline


@pytest.mark.parametrize("kwargs", [
    {"method": "expanding", "min_periods": 3, "clip": 1.5},
    {"method": "rolling", "window": 4, "min_periods": 2, "clip": None},
    {"method": "rolling", "window": 2, "min_periods": 1},
    {"method": "none"},
    {"method": "train", "fit_end": 20 * H, "clip": 2.0},
    {"method": "train", "fit_end": 20 * H, "per_asset": True},
], ids=["expanding", "rolling", "rolling_2", "none", "train", "train_per_asset"])
def test_online_rows_are_the_offline_rows_bit_for_bit_for_every_method(kwargs):
    cfg = NormaliseConfig(**kwargs)
    rng = np.random.default_rng(9)
    x = rng.normal(3.0, 2.0, size=(50, 3, 2)) * np.array([1.0, 1e-4])
    x[rng.random(x.shape) < 0.15] = np.nan
    x[:10, 2] = np.nan  # a late listing
    stats = fit_train_stats(x, np.arange(50, dtype=np.int64) * H, np.isfinite(x[..., 0]), cfg) \
        if cfg.method == "train" else None
    off = normalise_offline(x, cfg, stats)
    on = _online(x, cfg, stats)
    assert on.shape == off.shape == x.shape
    np.testing.assert_array_equal(on, off)
