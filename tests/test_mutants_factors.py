"""Custom factors and normalisation: paths that the mutation run
(scripts/mutation.py) found unchecked, each test failing for a planted bug the suite let through."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from _factor_data import random_panel
from factorgym.data_layer.factors import factor_from_config
from factorgym.data_layer.factors.custom import custom_factor

# built-in custom factors with their DEFAULT parameters -> the warm-up their definition needs
DEFAULT_WARMUP = {"log_return": 1, "realized_vol": 24, "volume_zscore": 23, "bb_pctb": 19, "obv_flow": 24,
                  "candle_shape": 0, "price_position": 23}


@pytest.mark.parametrize("name", sorted(DEFAULT_WARMUP))
def test_a_builtin_with_default_params_declares_the_warmup_its_window_needs(name):
    """The declared warm-up of each built-in, parameters left to their defaults, is exactly the row
    of its first valid value: rows before it are NaN, the row itself is a value (a warm-up one bar
    too long would throw that first value away, one too short would let NaN rows through)."""
    p = random_panel(T=80, A=1, holes=False)
    f = factor_from_config({"kind": "custom", "name": name})
    assert f.warmup == DEFAULT_WARMUP[name]
    x = f.compute(p)[:, 0, :]
    assert np.isnan(x[: f.warmup]).all() and np.isfinite(x[f.warmup]).all()


def test_price_position_with_its_default_window_against_pandas():
    p = random_panel(T=80, A=1, holes=False)
    got = factor_from_config({"kind": "custom", "name": "price_position"}).compute(p)[:, 0, 0]
    c, hi, lo = pd.Series(p.close[:, 0]), pd.Series(p.high[:, 0]).rolling(24).max(), pd.Series(p.low[:, 0]).rolling(24).min()
    np.testing.assert_allclose(got, ((c - lo) / (hi - lo)).to_numpy(), rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("per_asset", [False, True])
def test_train_stats_of_a_feature_without_valid_bars_are_zero_without_numpy_warnings(per_asset):
    """A feature (or, per asset, an asset's feature) with no valid bar in the fit range gets mean 0,
    std 0 and count 0 (its z-scores are then 0), computed without a divide warning; the others are
    the plain mean and population std of their valid bars."""
    import warnings

    from factorgym.data_layer.factors.normalise import NormaliseConfig, fit_train_stats

    rng = np.random.default_rng(5)
    x = rng.normal(size=(20, 2, 2))
    x[:, :, 1] = np.nan  # feature 1 never valid
    x[:, 1, 0] = np.nan  # asset 1 has no valid feature 0 either
    ts = np.arange(20, dtype=np.int64) * 3_600_000
    cfg = NormaliseConfig(method="train", fit_end=int(ts[10]), per_asset=per_asset)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = fit_train_stats(x, ts, np.ones((20, 2), bool), cfg)
    a0 = x[:10, 0, 0]
    if per_asset:
        assert stats["count"] == [[10, 0], [0, 0]]
        np.testing.assert_allclose(stats["mean"], [[a0.mean(), 0.0], [0.0, 0.0]], rtol=1e-12, atol=0)
        np.testing.assert_allclose(stats["std"], [[a0.std(), 0.0], [0.0, 0.0]], rtol=1e-12, atol=0)
    else:
        assert stats["count"] == [10, 0]
        np.testing.assert_allclose(stats["mean"], [a0.mean(), 0.0], rtol=1e-12, atol=0)
        np.testing.assert_allclose(stats["std"], [a0.std(), 0.0], rtol=1e-12, atol=0)


def test_price_position_of_a_coin_priced_below_one_against_pandas():
    """A coin quoted at ~0.1 (ranges far below 1 unit): the position is still (close - low) / range,
    not rescaled by the price level."""
    from _factor_data import HOUR, random_ohlcv
    from factorgym.data_layer.factors.base import CandlePanel

    x = random_ohlcv(80, 1, seed=3) * np.array([1e-3, 1e-3, 1e-3, 1e-3, 1.0])  # prices ~0.1, volume as is
    p = CandlePanel.from_arrays(np.arange(80, dtype=np.int64) * HOUR, x, ["S0/USD"])
    got = factor_from_config({"kind": "custom", "name": "price_position"}).compute(p)[:, 0, 0]
    c, hi, lo = pd.Series(x[:, 0, 3]), pd.Series(x[:, 0, 1]).rolling(24).max(), pd.Series(x[:, 0, 2]).rolling(24).min()
    want = ((c - lo) / (hi - lo)).to_numpy()
    assert np.nanmax(want) - np.nanmin(want) > 0.5  # the check spans the range, not one corner
    np.testing.assert_allclose(got, want, rtol=1e-9, equal_nan=True)


@pytest.mark.parametrize("scale", [1e-4, 1.0, 250.0])
def test_train_z_scores_against_numpy_with_small_and_large_spreads_and_both_clip_bounds(scale):
    """method 'train': z = clip((x - mean) / std, -clip, clip) with the fit range's pooled mean and
    population std, computed here with plain numpy; spreads far below 1 (a factor in returns) are
    scaled, not treated as flat, and the lower bound is -clip."""
    from factorgym.data_layer.factors.normalise import NormaliseConfig, fit_train_stats, normalise_offline

    rng = np.random.default_rng(11)
    x = rng.normal(0.3 * scale, scale, size=(60, 2, 1))
    x[45:, 0, 0] = np.linspace(-6, 6, 15) * scale + 0.3 * scale  # far outside both bounds after the fit
    ts = np.arange(60, dtype=np.int64) * 3_600_000
    cfg = NormaliseConfig(method="train", fit_end=int(ts[40]), clip=2.5)
    stats = fit_train_stats(x, ts, np.ones((60, 2), bool), cfg)
    fit = x[:40].ravel()
    want = np.clip((x - fit.mean()) / fit.std(), -2.5, 2.5)
    got = normalise_offline(x, cfg, stats)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert (got == -2.5).any() and (got == 2.5).any() and ((got > -2.5) & (got < 0)).any()


def test_online_train_normalisation_with_the_method_read_from_a_config_file(tmp_path):
    """The method name comes from YAML (a new str object, not the literal 'train' of the code): the
    online normaliser still applies the saved train statistics, row for row as offline."""
    import yaml

    from factorgym.data_layer.factors.normalise import NormaliseConfig, OnlineNormaliser, fit_train_stats, \
        normalise_offline

    (tmp_path / "n.yaml").write_text("method: train\nfit_end: 1970-01-01T10:00:00Z\nclip: 3.0\n")
    cfg = NormaliseConfig.from_dict(yaml.safe_load((tmp_path / "n.yaml").read_text()))
    assert cfg.method == "train" and cfg.fit_end == 10 * 3_600_000
    rng = np.random.default_rng(4)
    x = rng.normal(5.0, 2.0, size=(20, 2, 1))
    ts = np.arange(20, dtype=np.int64) * 3_600_000
    stats = fit_train_stats(x, ts, np.ones((20, 2), bool), cfg)
    on = OnlineNormaliser(cfg, 2, 1, stats)
    rows = np.stack([on.update(r) for r in x])
    fit = x[:10].ravel()
    np.testing.assert_allclose(rows, np.clip((x - fit.mean()) / fit.std(), -3.0, 3.0), rtol=1e-9)
    np.testing.assert_array_equal(rows, normalise_offline(x, cfg, stats))


def test_method_none_read_from_a_config_file_leaves_the_features_as_they_are(tmp_path):
    """'none' from YAML (a new str object, not the literal of the code): the features come back
    unchanged, NaN included (not z-scored)."""
    import yaml

    from factorgym.data_layer.factors.normalise import NormaliseConfig, normalise_offline

    (tmp_path / "n.yaml").write_text("method: none\n")
    cfg = NormaliseConfig.from_dict(yaml.safe_load((tmp_path / "n.yaml").read_text()))
    x = np.random.default_rng(6).normal(3.0, 2.0, size=(150, 2, 1))
    x[7, 1, 0] = np.nan
    np.testing.assert_array_equal(normalise_offline(x, cfg), x)


def test_rolling_normalisation_with_the_default_window_against_pandas():
    """method 'rolling' with window left out: the 720-bar window the shipped factor configs state
    (30 days of hourly bars), min_periods 100, clip 5; pandas' rolling mean and population std."""
    from factorgym.data_layer.factors.normalise import NormaliseConfig, normalise_offline

    cfg = NormaliseConfig.from_dict({"method": "rolling"})
    rng = np.random.default_rng(12)
    x = np.cumsum(rng.normal(0.0, 1.0, size=(900, 1, 1)), axis=0)  # a drifting level: the window matters
    s = pd.Series(x[:, 0, 0])
    roll = s.rolling(720, min_periods=100)
    want = ((s - roll.mean()) / roll.std(ddof=0)).clip(-5.0, 5.0).to_numpy()
    got = normalise_offline(x, cfg)[:, 0, 0]
    assert np.isnan(got[:99]).all() and np.isfinite(got[99:]).all()
    np.testing.assert_allclose(got[99:], want[99:], rtol=1e-7, atol=1e-9)


@custom_factor("mutants_cumulative_log_close", warmup=3)
def _cumulative_log_close(open, high, low, close, volume):
    return np.cumsum(np.log(close))  # every row depends on ALL earlier bars


@pytest.mark.parametrize("T", [5, 6, 40])
def test_a_warmup_too_short_is_refused_on_a_panel_just_past_it(T):
    """A factor declared with warm-up 3 that depends on the whole history: refused however short the
    panel, as long as it has a row whose history reaches back past the warm-up (5 bars: row 4
    would need bars 1-4 only, but depends on bar 0 too)."""
    from factorgym.errors import ConfigError

    f = factor_from_config({"kind": "custom", "name": "mutants_cumulative_log_close"})
    with pytest.raises(ConfigError, match="declare a larger warmup"):
        f.compute(random_panel(T=T, A=1, holes=False))


@pytest.mark.parametrize("clip", [0, 0.0, -1.0])
def test_a_clip_bound_of_zero_or_below_is_refused(clip):
    """clip bounds z-scores to [-clip, clip]: 0 would flatten every feature to 0 offline (and mean 'no
    clip' in the compiled routine), so it is refused with the rule; None is 'no clip'."""
    from factorgym.data_layer.factors.normalise import NormaliseConfig
    from factorgym.errors import ConfigError

    with pytest.raises(ConfigError, match=r"normalise.clip must be > 0 or null"):
        NormaliseConfig.from_dict({"method": "expanding", "clip": clip})
    assert NormaliseConfig.from_dict({"method": "expanding", "clip": None}).clip is None


def test_price_position_over_a_flat_range_is_one_half_without_numpy_warnings():
    """A market that does not move for a whole window (a stablecoin, a halted pair): high = low, so
    the range is 0 and the position is 0.5 by definition, computed without a divide warning (under
    -W error a warning would be an exception in the user's build)."""
    import warnings

    from _factor_data import HOUR, random_ohlcv
    from factorgym.data_layer.factors.base import CandlePanel

    x = random_ohlcv(80, 1, seed=5)
    x[30:, 0, :4] = 1.0  # open = high = low = close = 1 from bar 30
    p = CandlePanel.from_arrays(np.arange(80, dtype=np.int64) * HOUR, x, ["S0/USD"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = factor_from_config({"kind": "custom", "name": "price_position"}).compute(p)[:, 0, 0]
    assert (got[53:] == 0.5).all()  # bars 30-53 are the first flat 24-bar window
    assert np.isfinite(got[23:53]).all() and (got[23:53] != 0.5).any()


def test_expanding_normalisation_with_the_defaults_against_pandas():
    """method 'expanding' with nothing else set: min_periods 100 and the clip at 5 that the shipped
    factor configs state; pandas' expanding mean and population std. A jump at bar 150 is far past
    5 standard deviations, so the clip is reached."""
    from factorgym.data_layer.factors.normalise import NormaliseConfig, normalise_offline

    cfg = NormaliseConfig.from_dict({"method": "expanding"})
    x = np.random.default_rng(13).normal(2.0, 1.0, size=(200, 1, 1))
    x[150:, 0, 0] += 50.0
    s = pd.Series(x[:, 0, 0])
    e = s.expanding(min_periods=100)
    want = ((s - e.mean()) / e.std(ddof=0)).clip(-5.0, 5.0).to_numpy()
    got = normalise_offline(x, cfg)[:, 0, 0]
    assert np.isnan(got[:99]).all() and got[150] == 5.0
    np.testing.assert_allclose(got[99:], want[99:], rtol=1e-7, atol=1e-9)



def test_volume_zscore_of_a_constant_volume_is_zero_without_numpy_warnings():
    """A window of equal volumes has no spread: the z-score is 0 by definition ("0 where they are all
    equal"), computed without a divide warning."""
    import warnings

    from _factor_data import HOUR, random_ohlcv
    from factorgym.data_layer.factors.base import CandlePanel

    x = random_ohlcv(80, 1, seed=8)
    x[30:, 0, 4] = 1000.0  # the same volume from bar 30
    p = CandlePanel.from_arrays(np.arange(80, dtype=np.int64) * HOUR, x, ["S0/USD"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = factor_from_config({"kind": "custom", "name": "volume_zscore"}).compute(p)[:, 0, 0]
    assert (got[53:] == 0.0).all() and np.isfinite(got[23:]).all() and (got[23:53] != 0.0).any()



@pytest.mark.parametrize("warmup", [lambda p: p.get("window", 5) / 2, lambda p: p.get("window", 5) > 3,
                                    lambda p: str(p.get("window", 5)), lambda p: -p.get("window", 5)],
                         ids=["fraction", "bool", "str", "negative"])
def test_a_declared_warmup_that_is_not_a_whole_number_of_bars_is_refused(warmup):
    """A registered factor whose warm-up (a function of its params) gives a fraction, a bool, a
    string or a negative number is refused with the rule, naming the value (a float or True would
    otherwise cut the rows as if it were a count)."""
    from factorgym.errors import ConfigError

    def half_window_mean(open, high, low, close, volume, window=5):
        return pd.Series(close).rolling(window).mean().to_numpy()

    custom_factor("mutants_declared_warmup", warmup=warmup)(half_window_mean)
    with pytest.raises(ConfigError, match="warmup must be a whole number of bars >= 0, got"):
        factor_from_config({"kind": "custom", "name": "mutants_declared_warmup"})
