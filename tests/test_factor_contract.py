"""The custom-factor layer's contract, function by function (data_layer/factors/custom.py): the
decorator and registry, names, every validation with its exact one-line message, the first
accepted and first refused value of each bound, the look-ahead / warm-up probe, the online paths
(recompute and incremental) against the offline rows, and every built-in with its DEFAULT
parameters against pandas or a hand computation, on flat and zero-volume markets without numpy
warnings. Independent answers throughout: pandas, plain numpy, numbers worked by hand."""

from __future__ import annotations

import logging
import re
import textwrap
import warnings

import numpy as np
import pandas as pd
import pytest

from _factor_data import HOUR, random_ohlcv, random_panel
from factorgym.data_layer.factors.base import CandlePanel, factor_from_config
from factorgym.data_layer.factors.custom import (
    CustomFactor,
    CustomIncremental,
    CustomOnline,
    CustomSpec,
    custom_factor,
    registered_custom,
)
from factorgym.errors import ConfigError

BUILTINS = ("bb_pctb", "candle_shape", "log_return", "obv_flow", "price_position", "realized_vol", "volume_zscore")


def _panel(x: np.ndarray) -> CandlePanel:
    return CandlePanel.from_arrays(np.arange(len(x), dtype=np.int64) * HOUR, x, [f"S{a}/USD" for a in range(x.shape[1])])


def _custom(name: str, **cfg) -> CustomFactor:
    return factor_from_config({"kind": "custom", "name": name, **cfg})


def _online_rows(f, p: CandlePanel) -> np.ndarray:
    on = f.online(p.symbols)
    bars = p.ohlcv()
    return np.stack([on.update(int(t), bars[i]) for i, t in enumerate(p.timestamps)])


# --------------------------------------------------------------------------- registry and names


def test_the_registry_lists_every_builtin_sorted():
    names = registered_custom()
    assert names == sorted(names) and set(BUILTINS) <= set(names)


def test_the_decorator_registers_under_the_function_name_unless_one_is_given_and_marks_the_function():
    def contract_unnamed(open, high, low, close, volume):
        return close

    spec_fn = custom_factor(warmup=0, outputs=["a"])(contract_unnamed)
    assert spec_fn is contract_unnamed  # the function itself comes back, still callable
    spec = contract_unnamed.factorgym_spec
    assert spec == CustomSpec("contract_unnamed", contract_unnamed, 0, ("a",), None)
    assert "contract_unnamed" in registered_custom()
    custom_factor("contract_named", warmup=2)(contract_unnamed)
    assert contract_unnamed.factorgym_spec.name == "contract_named" and contract_unnamed.factorgym_spec.outputs is None


def test_registering_a_name_again_warns_only_for_another_function(caplog):
    def first(open, high, low, close, volume):
        return close

    def second(open, high, low, close, volume):
        return close

    with caplog.at_level(logging.WARNING, logger="factorgym.data_layer.factors.custom"):
        custom_factor("contract_twice", warmup=0)(first)
        custom_factor("contract_twice", warmup=0)(first)  # the same function again (a module re-import)
        assert caplog.records == []
        custom_factor("contract_twice", warmup=0)(second)
    assert len(caplog.records) == 1
    assert "custom factor 'contract_twice' is registered again" in caplog.records[0].getMessage()
    assert _custom("contract_twice").spec.func is second


def _scaled_close(open, high, low, close, volume, scale=1.0, tag="x"):
    return close * scale


custom_factor("contract_scaled_close", warmup=0)(_scaled_close)


@pytest.mark.parametrize("params, alias, outputs, names", [
    (None, None, None, ["contract_scaled_close"]),
    ({"scale": 2.0}, None, None, ["contract_scaled_close_2"]),  # a whole float is written as an int
    ({"scale": 2.5}, None, None, ["contract_scaled_close_2.5"]),
    ({"scale": 3, "tag": "y"}, None, None, ["contract_scaled_close_3_y"]),  # in the params' order
    ({"tag": "y", "scale": 3}, None, None, ["contract_scaled_close_y_3"]),
    ({"scale": 2.0}, "mine", None, ["mine"]),
    ({"scale": 2.0}, None, ["a", "b"], ["contract_scaled_close_2.a", "contract_scaled_close_2.b"]),
    (None, "mine", ["a"], ["mine.a"]),
])
def test_feature_names_from_name_params_alias_and_outputs(params, alias, outputs, names):
    cfg = {"params": params} if params else {}
    if alias:
        cfg["alias"] = alias
    if outputs:
        cfg["outputs"] = outputs
    assert _custom("contract_scaled_close", **cfg).names == names


def test_builtin_names_and_warmups_with_params():
    assert _custom("log_return", params={"periods": 24}).names == ["log_return_24"]
    assert _custom("candle_shape").names == ["candle_shape.range", "candle_shape.body", "candle_shape.upper_shadow",
                                             "candle_shape.lower_shadow"]
    for name, params, warmup in [("log_return", {"periods": 5}, 5), ("realized_vol", {"window": 7}, 7),
                                 ("volume_zscore", {"window": 7}, 6), ("bb_pctb", {"timeperiod": 7}, 6),
                                 ("obv_flow", {"window": 7}, 7), ("price_position", {"window": 7}, 6)]:
        f = _custom(name, params=params)
        assert f.warmup == warmup and type(f.warmup) is int, name
    assert repr(_custom("log_return")) == "CustomFactor(['log_return'], warmup=1)"


# --------------------------------------------------------------------------- warm-up validation


def _spec(warmup, func=_scaled_close):
    return CustomSpec("contract_spec", func, warmup)


@pytest.mark.parametrize("warmup, want", [(0, 0), (1, 1), (np.int64(4), 4), (np.int32(2), 2), (lambda p: 3, 3)])
def test_a_whole_number_of_bars_from_zero_is_accepted_as_an_int(warmup, want):
    f = CustomFactor(_spec(warmup))
    assert f.warmup == want and type(f.warmup) is int


@pytest.mark.parametrize("warmup", [-1, 2.0, 2.5, True, False, "3", None, np.float64(3.0)])
def test_anything_else_is_refused_in_one_line_naming_the_value(warmup):
    with pytest.raises(ConfigError) as e:
        CustomFactor(_spec(warmup))
    assert str(e.value) == f"custom factor 'contract_spec': warmup must be a whole number of bars >= 0, got {warmup!r}"


@pytest.mark.parametrize("value, want", [(3.0, 3), (0.0, 0), (7, 7)])
def test_a_config_warmup_given_as_a_whole_float_is_that_number(value, want):
    assert _custom("log_return", warmup=value).warmup == want
    assert factor_from_config({"kind": "custom", "func": "numpy:add", "warmup": value}).warmup == want


@pytest.mark.parametrize("value, shown", [(2.5, "2.5"), (-1.0, "-1"), ("3", "'3'"), (True, "True")])
def test_a_config_warmup_is_never_truncated_or_coerced(value, shown):
    with pytest.raises(ConfigError, match=re.escape(f"warmup must be a whole number of bars >= 0, got {shown}")):
        _custom("log_return", warmup=value)


# --------------------------------------------------------------------------- params


def test_an_unknown_param_is_refused_naming_the_key_and_the_accepted_ones():
    with pytest.raises(ConfigError) as e:
        _custom("contract_scaled_close", params={"scal": 2.0})
    assert str(e.value) == ("custom factor 'contract_scaled_close' params: unknown key 'scal' (did you mean 'scale'?); "
                            "allowed: scale, tag")


def test_a_candle_field_is_not_a_param():
    with pytest.raises(ConfigError, match=r"params: unknown key 'close'; allowed: scale, tag"):
        _custom("contract_scaled_close", params={"close": 1.0})


def test_keyword_only_params_are_accepted_and_a_function_with_kwargs_takes_any():
    def kw_only(open, high, low, close, volume, *, k=1):
        return close * k

    def any_kw(open, high, low, close, volume, **kw):
        return close * kw.get("k", 1)

    p = random_panel(T=30, A=1, holes=False)
    got = CustomFactor(CustomSpec("kw_only", kw_only, 0), {"k": 3}).compute(p)[:, 0, 0]
    np.testing.assert_array_equal(got, 3 * p.close[:, 0])
    got = CustomFactor(CustomSpec("any_kw", any_kw, 0), {"k": 2, "unused": 1}).compute(p)[:, 0, 0]
    np.testing.assert_array_equal(got, 2 * p.close[:, 0])


def test_a_callable_without_a_signature_is_left_to_the_call_to_check():
    class NoSignature:
        __signature__ = "not a signature"  # inspect.signature raises TypeError for this

        def __call__(self, open, high, low, close, volume, k=1):
            return close * k

    f = CustomFactor(CustomSpec("no_sig", NoSignature(), 0), {"k": 2})
    np.testing.assert_array_equal(f.compute(random_panel(T=10, A=1, holes=False))[:, 0, 0],
                                  2 * random_panel(T=10, A=1, holes=False).close[:, 0])


# --------------------------------------------------------------------------- one asset's series


def test_a_failing_function_is_one_config_error_naming_the_factor_params_and_cause():
    def boom(open, high, low, close, volume, k=1):
        raise ValueError("bad input")

    f = CustomFactor(CustomSpec("boom", boom, 0), {"k": 2})
    with pytest.raises(ConfigError) as e:
        f.compute(random_panel(T=10, A=1, holes=False))
    assert str(e.value) == "custom factor 'boom' failed with params {'k': 2}: ValueError('bad input')"
    assert isinstance(e.value.__cause__, ValueError)


@pytest.mark.parametrize("result, shape", [
    (lambda c: c[:-1], (9, 1)), (lambda c: np.column_stack([c, c]), (10, 2)), (lambda c: c[None, :], (1, 10)),
    (lambda c: float(c[-1]), ()), (lambda c: c.reshape(10, 1, 1), (10, 1, 1)),
], ids=["short", "two_columns", "one_row", "scalar", "three_d"])
def test_a_result_of_the_wrong_shape_is_refused_with_both_shapes_and_the_names(result, shape):
    f = CustomFactor(CustomSpec("shaped", lambda open, high, low, close, volume: result(close), 0))
    with pytest.raises(ConfigError) as e:
        f.compute(random_panel(T=10, A=1, holes=False))
    assert str(e.value) == (f"custom factor 'shaped' returned shape {shape}; expected (10, 1) "
                            "(one row per input bar, one column per output ['shaped'])")


def test_integer_lists_and_read_only_results_come_back_as_writable_float64():
    def ints(open, high, low, close, volume):
        return [int(c > 0) for c in close]

    def read_only(open, high, low, close, volume):
        out = np.cumsum(np.ones_like(close))  # (depends on the whole history: warmup 12 > every row)
        out.flags.writeable = False
        return out

    p = random_panel(T=12, A=1, holes=False)
    for fn in (ints, read_only):
        f = CustomFactor(CustomSpec(fn.__name__, fn, 2 if fn is ints else 12))  # the warm-up rows are written NaN in place
        series = {k: getattr(p, k)[:, 0] for k in ("open", "high", "low", "close", "volume")}
        raw = f.compute_series(series)
        assert raw.dtype == np.float64 and raw.shape == (12, 1) and raw.flags.writeable
        got = f.compute(p)[:, 0, 0]
        want = np.full(12, np.nan) if fn is read_only else np.r_[np.nan, np.nan, np.ones(10)]
        np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------- the probe


@custom_factor("contract_rolling_partial", warmup=lambda p: p.get("window", 4) - 1)
def _rolling_partial(open, high, low, close, volume, window=4):
    """A mean over up to ``window`` bars: finite from the first bar; each row from its own slice (the
    same bits however long the series)."""
    return np.array([close[max(0, i - window + 1): i + 1].mean() for i in range(len(close))])


@custom_factor("contract_needs_five", warmup=2)
def _needs_five(open, high, low, close, volume):
    """A 5-bar mean declared with warm-up 2: a 3-bar recompute of any row is NaN, the full series
    is not -- refused (NaN where the full run has a value is a difference, not a match)."""
    return pd.Series(close).rolling(5).mean().to_numpy()


def test_a_row_that_is_nan_in_a_warmup_long_recompute_but_a_value_offline_is_refused():
    f = _custom("contract_needs_five")
    with pytest.raises(ConfigError) as e:
        f.compute(random_panel(T=40, A=1, holes=False))
    assert str(e.value) == ("custom factor 'contract_needs_five': row 5 needs more than the declared warmup=2 bars of "
                            "history; declare a larger warmup")


@pytest.mark.parametrize("T", [1, 2, 3, 4, 6, 30])
def test_a_factor_true_to_its_warmup_passes_the_probe_on_any_length(T):
    """Panels shorter than the warm-up, exactly as long, just past it: all accepted, rows inside the
    warm-up NaN, the rest the pandas rolling mean over up to 4 bars."""
    p = random_panel(T=T, A=1, holes=False)
    got = _custom("contract_rolling_partial").compute(p)[:, 0, 0]
    want = pd.Series(p.close[:, 0]).rolling(4, min_periods=1).mean().to_numpy().copy()
    want[:3] = np.nan
    np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("ahead_from", [*range(9), 12])
def test_a_look_ahead_from_any_early_row_is_refused_naming_the_first_probe_that_sees_it(ahead_from):
    """Reads bar t+1 from row ``ahead_from`` on (warm-up 0: probes rows 0, 3 and 7 of a long panel)."""

    def peek(open, high, low, close, volume):
        out = close.copy()
        out[ahead_from:-1] = close[ahead_from + 1:]
        return out

    f = CustomFactor(CustomSpec("peek_late", peek, 0))
    if ahead_from > 7:  # past every probe row: the one-off check cannot see it (documented: checked once)
        f.compute(random_panel(T=40, A=1, holes=False))
        return
    first = min(r for r in (0, 3, 7) if r >= ahead_from)
    with pytest.raises(ConfigError) as e:
        f.compute(random_panel(T=40, A=1, holes=False))
    assert str(e.value) == (f"custom factor 'peek_late' looks ahead: its rows <= {first} change when later bars are "
                            "removed; a feature at bar t may use bars <= t only")


def test_the_probe_runs_once_then_each_compute_only_calls_the_function():
    calls = []

    def counted(open, high, low, close, volume):
        calls.append(len(close))
        return close.copy()

    f = CustomFactor(CustomSpec("counted", counted, 1))
    p = random_panel(T=20, A=2, holes=False)
    f.compute(p)
    first = len(calls)
    assert first > 2  # one call per asset and the probe's recomputes
    f.compute(p)
    assert len(calls) == first + 2  # one per asset


def test_values_that_differ_only_by_rounding_between_recomputes_pass_the_probe():
    """A rolling sum through a cumulative sum: the last bits of a row depend on how long the series is
    (well inside the 1e-9 tolerance) -- accepted; the values are the rolling sums."""

    def cumsum_window(open, high, low, close, volume):
        s = np.cumsum(close * 1e-3 + 0.1)
        out = s.copy()
        out[3:] = s[3:] - s[:-3]
        return out

    p = random_panel(T=60, A=1, holes=False)
    got = CustomFactor(CustomSpec("cumsum_window", cumsum_window, 2)).compute(p)[:, 0, 0]
    want = (pd.Series(p.close[:, 0] * 1e-3 + 0.1).rolling(3).sum()).to_numpy()
    np.testing.assert_allclose(got[3:], want[3:], rtol=1e-9)


# --------------------------------------------------------------------------- online


def test_the_builtins_go_online_incrementally_and_other_functions_by_recompute():
    syms = ["S0/USD"]
    for name in BUILTINS:
        assert type(_custom(name).online(syms)) is CustomIncremental, name
    assert type(_custom("contract_rolling_partial").online(syms)) is CustomOnline


@pytest.mark.parametrize("window", [1, 2, 4])
def test_online_recompute_masks_each_assets_own_warmup_and_wraps_its_buffer(window):
    """A function finite from its first bar; assets listing late and missing bars: the online rows
    equal the offline ones exactly, NaN inside each asset's own warm-up (counted in its bars), over
    many more bars than the buffer (2 x (warmup + 1)) holds."""
    p = random_panel(T=90, A=3, seed=2)
    f = _custom("contract_rolling_partial", params={"window": window})
    off = f.compute(p)
    np.testing.assert_array_equal(_online_rows(f, p), off)
    late = np.flatnonzero(np.isfinite(p.close[:, 1]))
    assert np.isnan(off[late[: window - 1], 1]).all() and np.isfinite(off[late[window - 1:], 1]).all()


class _CloseState:
    """An incremental state that (wrongly for its declared warm-up) has a value from the first bar."""

    def __init__(self, n_assets, **params):
        self.n = n_assets

    def update(self, bar, has):
        return np.where(has[:, None], bar[:, 3:4], np.nan)


custom_factor("contract_close_incremental", warmup=3, online=_CloseState)(
    lambda open, high, low, close, volume: close.copy())


def test_online_incremental_masks_each_assets_declared_warmup_as_offline_does():
    p = random_panel(T=40, A=3, seed=4)
    f = _custom("contract_close_incremental")
    on = f.online(p.symbols)
    assert isinstance(on, CustomIncremental)
    off = f.compute(p)
    np.testing.assert_array_equal(_online_rows(f, p), off)
    for a in range(3):
        rows = np.flatnonzero(np.isfinite(p.close[:, a]))
        assert np.isnan(off[rows[:3], a]).all() and (off[rows[3:], a, 0] == p.close[rows[3:], a]).all()


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_with_default_params_online_equals_offline(name):
    p = random_panel(T=90, A=3, seed=7)
    f = _custom(name)
    np.testing.assert_allclose(_online_rows(f, p), f.compute(p), rtol=0, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("name", ["candle_shape", "log_return", "price_position", "contract_rolling_partial"])
def test_a_bar_is_a_finite_close_online_as_offline_whatever_its_volume(name):
    """A bar whose volume is missing (NaN) but whose close is there is a bar (base.available_rows:
    "finite close"): factors that do not read the volume have their value there, online as offline,
    and the bars after it follow from it."""
    x = random_ohlcv(40, 2, seed=9)
    x[[25, 30], 0, 4] = np.nan
    p = _panel(x)
    f = _custom(name)
    off = f.compute(p)
    assert np.isfinite(off[[25, 30], 0]).all()
    np.testing.assert_allclose(_online_rows(f, p), off, rtol=0, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("name", ["log_return", "contract_rolling_partial"])
def test_a_bar_with_a_missing_open_high_or_low_is_still_a_bar_for_a_factor_of_the_close(name):
    """Only the close decides whether an asset has a bar: a NaN open, high or low leaves a factor of
    the close its value there, online (incremental state or recompute) as offline."""
    x = random_ohlcv(40, 2, seed=10)
    for row, field in ((20, 0), (24, 1), (28, 2)):
        x[row, 0, field] = np.nan
    p = _panel(x)
    f = _custom(name)
    off = f.compute(p)
    assert np.isfinite(off[[20, 21, 24, 25, 28, 29], 0]).all()
    np.testing.assert_allclose(_online_rows(f, p), off, rtol=0, atol=1e-12, equal_nan=True)


# --------------------------------------------------------------------------- built-ins, default params


def _ref_default(name, s):
    o, h, lo, c, v = (pd.Series(s[:, k]) for k in range(5))
    if name == "log_return":
        return [np.log(c / c.shift(1))]
    if name == "realized_vol":
        return [np.log(c).diff().rolling(24).std(ddof=0)]
    if name == "volume_zscore":
        lv = np.log1p(v)
        return [(lv - lv.rolling(24).mean()) / lv.rolling(24).std(ddof=0)]
    if name == "bb_pctb":
        mid, sd = c.rolling(20).mean(), c.rolling(20).std(ddof=0)
        return [(c - (mid - 2.0 * sd)) / (4.0 * sd)]
    if name == "obv_flow":
        return [(np.sign(c.diff()) * v).rolling(24).sum() / v.where(c.diff().notna()).rolling(24).sum()]
    if name == "price_position":
        hi, low = h.rolling(24).max(), lo.rolling(24).min()
        return [(c - low) / (hi - low)]
    return [(h - lo) / c, (c - o) / c, (h - np.maximum(o, c)) / c, (np.minimum(o, c) - lo) / c]


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_with_default_params_against_pandas(name):
    x = random_ohlcv(120, 1, seed=21)
    got = _custom(name).compute(_panel(x))[:, 0, :]
    want = np.column_stack([r.to_numpy() for r in _ref_default(name, x[:, 0])])
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, equal_nan=True)
    assert np.isfinite(got[-1]).all()


def test_candle_shape_by_hand_on_two_bars():
    x = np.array([[[10.0, 12.0, 9.0, 11.0, 5.0]], [[11.0, 11.5, 8.0, 10.0, 5.0]]])
    got = _custom("candle_shape").compute(_panel(x))[:, 0, :]
    np.testing.assert_allclose(got, [[3 / 11, 1 / 11, 1 / 11, 1 / 11], [3.5 / 10, -1 / 10, 0.5 / 10, 2 / 10]],
                               rtol=1e-15)


def test_log_return_and_obv_flow_by_hand():
    close = np.array([100.0, 110.0, 99.0, 99.0, 120.0])
    vol = np.array([7.0, 1.0, 2.0, 3.0, 4.0])
    x = np.stack([close, close, close, close, vol], axis=-1)[:, None, :]
    p = _panel(x)
    lr = _custom("log_return", params={"periods": 2}).compute(p)[:, 0, 0]
    np.testing.assert_allclose(lr, [np.nan, np.nan, np.log(0.99), np.log(0.9), np.log(120 / 99)], rtol=1e-15)
    of = _custom("obv_flow", params={"window": 3}).compute(p)[:, 0, 0]
    # signs of the changes: +, -, 0, +; volumes 1, 2, 3, 4 (the first bar's volume has no change)
    np.testing.assert_allclose(of, [np.nan, np.nan, np.nan, (1 - 2 + 0) / 6, (-2 + 0 + 4) / 9], rtol=1e-15)


# outputs of a market that never moves (every price 1, the same volume) and of one that never trades
FLAT = {"log_return": [0.0], "realized_vol": [0.0], "volume_zscore": [0.0], "bb_pctb": [0.5], "obv_flow": [0.0],
        "price_position": [0.5], "candle_shape": [0.0, 0.0, 0.0, 0.0]}


@pytest.mark.parametrize("volume", [250.0, 0.0])
@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_on_a_flat_market_gives_its_documented_value_without_numpy_warnings(name, volume):
    x = np.ones((60, 1, 5))
    x[..., 4] = volume
    f = _custom(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = f.compute(_panel(x))[:, 0, :]
        on = _online_rows(f, _panel(x))[:, 0, :]
    assert np.isnan(got[: f.warmup]).all()
    np.testing.assert_array_equal(got[f.warmup:], np.broadcast_to(FLAT[name], got[f.warmup:].shape))
    np.testing.assert_array_equal(on, got)


def test_bb_pctb_of_a_coin_priced_below_one_against_pandas():
    """Bands far narrower than one unit of price (a coin at ~0.01): %b is still (close - lower) / width,
    not the flat-band 0.5 -- the factor is scale-free."""
    x = random_ohlcv(80, 1, seed=3) * np.array([1e-4, 1e-4, 1e-4, 1e-4, 1.0])
    got = _custom("bb_pctb").compute(_panel(x))[:, 0, 0]
    want = _ref_default("bb_pctb", x[:, 0])[0].to_numpy()
    assert np.nanmax(want) - np.nanmin(want) > 0.5
    np.testing.assert_allclose(got, want, rtol=1e-7, equal_nan=True)


def test_bb_pctb_with_its_own_nbdev_by_hand_on_a_three_bar_window():
    """closes 1, 2, 3 (window 3): mean 2, population sd sqrt(2/3); nbdev 1 -> bands 2 -/+ sd; the close
    3 sits at (3 - 2 + sd) / (2 sd)."""
    close = np.array([1.0, 2.0, 3.0])
    x = np.stack([close] * 4 + [np.ones(3)], axis=-1)[:, None, :]
    got = _custom("bb_pctb", params={"timeperiod": 3, "nbdev": 1.0}).compute(_panel(x))[:, 0, 0]
    sd = np.sqrt(2 / 3)
    np.testing.assert_allclose(got[2], (1 + sd) / (2 * sd), rtol=1e-12)
    assert np.isnan(got[:2]).all()


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize("ref, msg", [
    ("numpy", "custom factor func 'numpy' must look like 'package.module:function'"),
    (":add", "custom factor func ':add' must look like 'package.module:function'"),
    ("numpy:", "custom factor func 'numpy:' must look like 'package.module:function'"),
    ("numpy:no_such_fn", "custom factor func 'numpy:no_such_fn': module 'numpy' has no attribute 'no_such_fn'"),
    ("numpy:linalg.no_such_fn", "custom factor func 'numpy:linalg.no_such_fn': module 'numpy' has no attribute "
                                "'linalg.no_such_fn'"),
    ("math:pi", "custom factor func 'math:pi' is not callable"),
], ids=["no_colon", "no_module", "no_function", "no_attribute", "no_nested_attribute", "not_callable"])
def test_func_references_that_cannot_be_used_are_refused_in_one_line(ref, msg):
    with pytest.raises(ConfigError) as e:
        factor_from_config({"kind": "custom", "func": ref, "warmup": 0})
    assert str(e.value) == msg


def test_a_module_that_cannot_be_imported_names_the_module_and_the_cause():
    with pytest.raises(ConfigError) as e:
        factor_from_config({"kind": "custom", "func": "no_such_module_xyz.sub:f", "warmup": 0})
    assert str(e.value).startswith("custom factor func 'no_such_module_xyz.sub:f': cannot import module "
                                   "'no_such_module_xyz.sub' (No module named 'no_such_module_xyz')")


def test_a_dotted_attribute_path_reaches_a_nested_function():
    f = factor_from_config({"kind": "custom", "func": "numpy:char.add", "warmup": 0})
    assert f.spec.func is np.char.add and f.names == ["add"]


def test_unknown_config_keys_and_unregistered_names_are_refused_in_one_line():
    with pytest.raises(ConfigError) as e:
        factor_from_config({"kind": "custom", "name": "log_return", "param": {}})
    assert str(e.value) == ("custom factor 'log_return': unknown key 'param' (did you mean 'params'?); allowed: alias, "
                            "func, kind, name, outputs, params, warmup")
    with pytest.raises(ConfigError) as e:
        factor_from_config({"kind": "custom", "name": "no_such_factor"})
    assert str(e.value) == (f"custom factor 'no_such_factor' is not registered; registered: {registered_custom()}; "
                            "or give func: 'module:function' and warmup")
    with pytest.raises(ConfigError) as e:
        factor_from_config({"kind": "custom", "func": "numpy:add"})
    assert str(e.value) == "custom factor func 'numpy:add' needs 'warmup' (bars of history it reads)"


def test_a_decorated_function_by_reference_keeps_its_spec_and_a_given_warmup_overrides_only_the_warmup(tmp_path,
                                                                                                      monkeypatch):
    (tmp_path / "contract_factors_mod.py").write_text(textwrap.dedent("""
        import numpy as np
        from factorgym.data_layer.factors.custom import custom_factor
        from factorgym.data_layer.factors.custom_online import LogReturnOnline

        @custom_factor("contract_ref_lr", warmup=lambda p: p.get("periods", 1), outputs=["r"], online=LogReturnOnline)
        def lr(open, high, low, close, volume, periods=1):
            out = np.full(len(close), np.nan)
            out[periods:] = np.log(close[periods:] / close[:-periods])
            return out
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    f = factor_from_config({"kind": "custom", "func": "contract_factors_mod:lr", "params": {"periods": 2}})
    assert f.names == ["contract_ref_lr_2.r"] and f.warmup == 2 and isinstance(f.online(["A"]), CustomIncremental)
    g = factor_from_config({"kind": "custom", "func": "contract_factors_mod:lr", "warmup": 4, "name": "mine",
                            "params": {"periods": 2}})
    assert g.names == ["mine_2.r"] and g.warmup == 4 and isinstance(g.online(["A"]), CustomIncremental)
    h = factor_from_config({"kind": "custom", "func": "contract_factors_mod:lr", "warmup": 4})
    assert h.names == ["lr.r"]  # (no name given: the function's own)
    r = factor_from_config({"kind": "custom", "name": "log_return", "warmup": 3})
    assert r.warmup == 3 and r.spec.online is not None and r.spec.func is _custom("log_return").spec.func
    p = random_panel(T=30, A=1, holes=False)
    want = np.log(p.close[2:, 0] / p.close[:-2, 0])
    np.testing.assert_allclose(g.compute(p)[4:, 0, 0], want[2:], rtol=1e-15)
    assert np.isnan(g.compute(p)[:4, 0, 0]).all()


def test_a_plain_function_by_reference_has_no_outputs_or_online_state(tmp_path, monkeypatch):
    f = factor_from_config({"kind": "custom", "func": "numpy:add", "warmup": 0})
    assert f.spec.outputs is None and f.spec.online is None and f.names == ["add"]
