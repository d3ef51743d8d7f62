"""envs/metrics.py against its documented conventions (module docstring, compute_metrics' key
table): every function's value on hand-worked or pandas-computed curves, its edge cases (nan,
inf, ruin, too few bars), the exact error messages and the boundaries of the thresholds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from factorgym.data_layer.timeframes import timeframe_to_ms
from factorgym.envs import metrics as M

pytestmark = pytest.mark.filterwarnings("error")  # "Nothing here emits a numpy RuntimeWarning"

DAY = 86_400_000
HOUR = 3_600_000


# ------------------------------------------------------------------ annualisation
@pytest.mark.parametrize("timeframe, bars", [
    ("1m", 525_600), ("5m", 105_120), ("15m", 35_040), ("30m", 17_520), ("1h", 8_760), ("2h", 4_380),
    ("4h", 2_190), ("8h", 1_095), ("12h", 730), ("1d", 365), ("1w", 365 / 7),
])
def test_bars_per_year_is_a_365_day_24_7_year_over_the_bar_length(timeframe, bars):
    """'bars_per_year = 365 * 24 * 3600 * 1000 / timeframe_ms (8760 for 1h, 365 for 1d)'."""
    assert M.bars_per_year_from_ms(timeframe_to_ms(timeframe)) == pytest.approx(bars, rel=1e-15)
    assert M.MS_PER_YEAR == 365 * 24 * 3600 * 1000


@pytest.mark.parametrize("ms, got", [(0, "0"), (-1, "-1"), (-0.5, "-0.5"), (None, "None"), (0.0, "0.0"),
                                     (float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf")])
def test_bars_per_year_refuses_a_bar_length_that_is_not_positive_naming_it(ms, got):
    with pytest.raises(ValueError, match=rf"^timeframe_ms must be > 0, got {got}$"):
        M.bars_per_year_from_ms(ms)


@pytest.mark.parametrize("ms", [1, 0.5, 1e-3])
def test_any_positive_bar_length_is_accepted_however_short(ms):
    assert M.bars_per_year_from_ms(ms) == pytest.approx(365 * 86_400_000 / ms, rel=1e-15)


@pytest.mark.parametrize("days, short", [(0.0, True), (364.999, True), (365.0, False), (3650.0, False),
                                         (math.nan, False), (None, False)])
def test_a_span_is_short_below_365_days_and_unknown_spans_are_not_short(days, short):
    metrics = {} if days is None else {"span_days": days}
    got = M.is_short_span(metrics)
    assert got is short  # a bool, not a numpy bool
    assert M.MIN_ANNUALISE_DAYS == 365.0


# ------------------------------------------------------------------ the curve: input checks and ruin
@pytest.mark.parametrize("bad, i, shown", [([1.0, np.nan], 1, "nan"), ([1.0, 2.0, np.inf], 2, "inf"),
                                           ([-np.inf, 1.0], 0, "-inf"), ([np.nan], 0, "nan")])
@pytest.mark.parametrize("fn", [M.simple_returns, M.drawdown, M.max_drawdown, M.total_return,
                                lambda e: M.cagr(e, 1.0), lambda e: M.compute_metrics(e, bars_per_year=1.0)])
def test_a_non_finite_equity_value_is_refused_naming_the_first_one(fn, bad, i, shown):
    with pytest.raises(ValueError, match=rf"^equity must be finite; entry {i} is {shown}$"):
        fn(bad)


@pytest.mark.parametrize("first, shown", [(0.0, "0.0"), (-5.0, "-5.0"), (-1e-300, "-1e-300")])
def test_a_first_equity_value_that_is_not_positive_is_refused(first, shown):
    with pytest.raises(ValueError, match=rf"^the first equity value must be > 0, got {shown}$"):
        M.compute_metrics([first, 1.0, 2.0], bars_per_year=1.0)
    M.compute_metrics([1e-300, 1.0], bars_per_year=1.0)  # the smallest positive values are fine


@pytest.mark.parametrize("eq, cut", [
    ([100.0, 50.0, 0.0, 10.0], [100.0, 50.0, 0.0]),  # exactly 0 is ruin
    ([100.0, 50.0, -3.0, 10.0, -1.0], [100.0, 50.0, 0.0]),  # below 0 is set to 0; the rest is ignored
    ([100.0, 1e-9, 5.0], [100.0, 1e-9, 5.0]),  # tiny but positive is not ruin
])
def test_ruin_cuts_the_curve_at_the_first_value_at_or_below_zero(eq, cut):
    r = np.array(cut[1:]) / np.array(cut[:-1]) - 1.0
    np.testing.assert_array_equal(M.simple_returns(eq), r)
    peak = np.maximum.accumulate(cut)
    np.testing.assert_array_equal(M.drawdown(eq), 1.0 - np.array(cut) / peak)
    ruined = cut[-1] == 0.0
    assert M.total_return(eq) == (-1.0 if ruined else cut[-1] / cut[0] - 1.0)
    m = M.compute_metrics(eq, bars_per_year=365.0)
    assert m["ruined"] == (1.0 if ruined else 0.0) and m["n_bars"] == len(cut) - 1
    assert m["final_equity"] == cut[-1] and (m["max_drawdown"] == 1.0) == ruined


def test_a_two_dimensional_equity_is_read_flat():
    eq = np.array([[100.0, 110.0], [99.0, 121.0]])
    np.testing.assert_allclose(M.simple_returns(eq), [0.1, -0.1, 121 / 99 - 1], rtol=1e-15)
    assert M.compute_metrics(eq, bars_per_year=1.0)["n_bars"] == 3.0


@pytest.mark.parametrize("eq", [[], [7.0]])
def test_below_two_bars_there_are_no_returns_and_no_drawdown(eq):
    r = M.simple_returns(eq)
    assert r.dtype == np.float64 and r.shape == (0,)
    dd = M.drawdown(eq)
    assert dd.dtype == np.float64 and dd.shape == (len(eq),) and not dd.any()
    assert M.max_drawdown(eq) == 0.0


# ------------------------------------------------------------------ single figures against pandas / by hand
CURVE = np.array([100.0, 104.0, 98.0, 101.0, 95.0, 103.0, 110.0, 107.0])


def test_returns_drawdown_and_total_return_against_pandas():
    s = pd.Series(CURVE)
    np.testing.assert_allclose(M.simple_returns(CURVE), s.pct_change().dropna().to_numpy(), rtol=1e-14)
    np.testing.assert_allclose(M.drawdown(CURVE), (1 - s / s.cummax()).to_numpy(), rtol=1e-14, atol=1e-16)
    assert M.max_drawdown(CURVE) == pytest.approx(1 - 95 / 104, rel=1e-14)  # 104 -> 95
    assert M.total_return(CURVE) == pytest.approx(0.07, rel=1e-13)
    assert type(M.max_drawdown(CURVE)) is float and type(M.total_return(CURVE)) is float


@pytest.mark.parametrize("ratio, years", [(1.21, 2.0), (0.81, 2.0), (1.1, 0.5), (3.0, 10.0), (1.0, 3.0)])
def test_cagr_is_the_yearly_rate_that_compounds_to_the_total_return(ratio, years):
    got = M.cagr([50.0, 60.0, 50.0 * ratio], years)
    assert got == pytest.approx(ratio ** (1 / years) - 1, rel=1e-12, abs=1e-15)
    assert (1 + got) ** years == pytest.approx(ratio, rel=1e-12)


@pytest.mark.parametrize("years", [0.0, -1.0, math.nan])
def test_cagr_over_no_time_or_an_unknown_time_is_undefined(years):
    assert math.isnan(M.cagr([100.0, 110.0], years))


def test_cagr_after_ruin_is_minus_one_and_an_extrapolation_past_floats_is_inf_without_warning():
    assert M.cagr([100.0, 50.0, 0.0], 1.0) == -1.0 and M.cagr([100.0, -1.0], 5.0) == -1.0
    assert M.cagr([100.0, 200.0], 1e-6) == math.inf  # 2 ** 1e6 (the module's warnings are errors here)
    assert M.cagr([100.0, 50.0], 1e-6) == -1.0  # 0.5 ** 1e6 underflows to -100%


def test_volatility_sharpe_and_sortino_against_pandas_for_each_timeframe():
    r = pd.Series(CURVE).pct_change().dropna()
    down = math.sqrt((r.clip(upper=0) ** 2).mean())  # over all returns (Sortino & Price)
    for tf in ("1m", "1h", "4h", "1d", "1w"):
        bpy = M.bars_per_year_from_ms(timeframe_to_ms(tf))
        rv = r.to_numpy()
        assert M.ann_volatility(rv, bpy) == pytest.approx(r.std() * math.sqrt(bpy), rel=1e-13)
        assert M.sharpe(rv, bpy) == pytest.approx(r.mean() / r.std() * math.sqrt(bpy), rel=1e-13)
        assert M.sortino(rv, bpy) == pytest.approx(r.mean() / down * math.sqrt(bpy), rel=1e-13)


@pytest.mark.parametrize("fn", [M.ann_volatility, M.sharpe, M.sortino])
def test_volatility_and_ratios_need_two_returns(fn):
    assert math.isnan(fn([], 365.0)) and math.isnan(fn([0.05], 365.0))
    assert math.isfinite(fn([0.05, -0.02], 365.0))  # two: defined


def test_two_returns_by_hand():
    r = [0.05, -0.01]  # mean 0.02, sd = 0.06 / sqrt(2), downside sqrt(0.0001 / 2)
    assert M.ann_volatility(r, 4.0) == pytest.approx(0.06 / math.sqrt(2) * 2, rel=1e-13)
    assert M.sharpe(r, 4.0) == pytest.approx(0.02 / (0.06 / math.sqrt(2)) * 2, rel=1e-13)
    assert M.sortino(r, 4.0) == pytest.approx(0.02 / math.sqrt(0.0001 / 2) * 2, rel=1e-13)


@pytest.mark.parametrize("r, expected", [
    ([0.01, 0.01, 0.01], math.inf), ([-0.01, -0.01], -math.inf), ([0.0, 0.0, 0.0], math.nan),
    ([1e-3 - 2e-13, 1e-3 + 2e-13], math.inf),  # std 2.8e-13: float noise, counts as 0
    ([4e-13, 4e-13], math.nan), ([-4e-13, -4e-13], math.nan),  # |mean| below 1e-12 too: 0/0
    ([3e-12, 3e-12], math.inf), ([-3e-12, -3e-12], -math.inf),  # a real (if tiny) constant return
])
def test_sharpe_of_constant_returns_is_infinite_with_the_sign_of_the_mean_or_undefined_when_flat(r, expected):
    got = M.sharpe(r, 365.0)
    assert got == expected or (math.isnan(expected) and math.isnan(got))


def test_sharpe_just_above_the_noise_floor_is_a_number():
    r = np.array([1e-3 - 5e-12, 1e-3 + 5e-12])  # std 7.1e-12 > 1e-12: a real (tiny) spread
    sd = float(pd.Series(r).std())
    assert sd > 1e-12
    assert M.sharpe(r, 365.0) == pytest.approx(1e-3 / sd * math.sqrt(365.0), rel=1e-6)


def test_a_spread_of_exactly_the_noise_floor_is_not_below_it():
    """'std below 1e-12 counts as zero': a std (or downside deviation) of exactly 1e-12 is kept.
    x = 1.4142135623730952e-12 gives std([0, x]) = 1e-12 and DD([-x, 3x]) = 1e-12 exactly."""
    x = 1.4142135623730952e-12
    assert float(np.std([0.0, x], ddof=1)) == 1e-12  # the premise
    assert M.sharpe([0.0, x], 1.0) == pytest.approx((x / 2) / 1e-12, rel=1e-12)  # 1 / sqrt(2), not 0/0
    assert float(np.sqrt(np.mean(np.minimum([-x, 3 * x], 0.0) ** 2))) == 1e-12
    assert M.sortino([-x, 3 * x], 1.0) == pytest.approx(x / 1e-12, rel=1e-12)  # sqrt(2), not x/0 = inf


@pytest.mark.parametrize("r, expected", [
    ([0.01, 0.02, 0.0], math.inf),  # nothing below 0, mean > 0
    ([0.0, 0.0], math.nan),  # 0/0
    ([-0.01, -0.01], -math.sqrt(365.0)),  # DD = 0.01 = -mean
    ([-0.02, 0.02], 0.0),  # mean 0 over a real downside
    ([4e-13, 5e-13], math.nan),  # no downside, |mean| float noise: 0/0
])
def test_sortino_edge_cases(r, expected):
    got = M.sortino(r, 365.0)
    assert got == pytest.approx(expected, rel=1e-13) or (math.isnan(expected) and math.isnan(got))


@pytest.mark.parametrize("c, mdd, expected", [
    (0.3, 0.1, 3.0), (-0.2, 0.5, -0.4), (0.5, 0.0, math.inf), (-0.5, 0.0, -math.inf), (0.0, 0.0, math.nan),
    (math.nan, 0.1, math.nan), (0.2, math.nan, math.nan), (math.inf, 0.5, math.inf), (math.inf, math.inf, math.nan),
])
def test_calmar_is_cagr_over_max_drawdown_with_the_documented_edge_cases(c, mdd, expected):
    got = M.calmar(c, mdd)
    assert got == pytest.approx(expected, rel=1e-15) or (math.isnan(expected) and math.isnan(got))


def test_hit_rate_counts_strictly_positive_returns_among_exposed_bars():
    r = [0.01, 0.0, -0.02, 0.03, 0.05]
    assert M.hit_rate(r, [True, True, True, True, False]) == 0.5  # +1 %, 0, -2 %, +3 %: the flat bar is no hit
    assert M.hit_rate(r, [True, False, False, True, True]) == 1.0
    assert math.isnan(M.hit_rate(r, [False] * 5)) and math.isnan(M.hit_rate([], []))
    assert M.hit_rate(r[:2], [False, True, True, True]) == 0.0  # extra mask entries are ignored


# ------------------------------------------------------------------ compute_metrics: the whole dict
EQ = [1000.0, 1010.0, 990.0, 1030.0, 1030.0, 1060.0]
TO = [0.0, 0.8, 0.1, 0.5, 0.0, 0.2]
FEES = [0.0, 0.8, 0.1, 0.5, 0.0, 0.2]
GX = [0.0, 0.8, 0.8, 1e-13, 1e-11, 0.9]  # 1e-13 is float dust (not exposed), 1e-11 a real position


def test_compute_metrics_returns_every_documented_key_as_a_python_float():
    m = M.compute_metrics(EQ, bars_per_year=365.0, timestamps=np.arange(6) * DAY, turnover=TO, fees=FEES,
                          gross_exposure=GX, n_trades=7)
    assert tuple(m) == M.METRIC_KEYS
    assert all(type(v) is float for v in m.values()), {k: type(v) for k, v in m.items()}


def test_compute_metrics_by_hand_with_every_array():
    bpy = M.bars_per_year_from_ms(4 * HOUR)  # 2190
    ts = 1_700_000_000_000 + np.arange(6) * 4 * HOUR
    m = M.compute_metrics(EQ, bars_per_year=bpy, timestamps=ts, turnover=TO, fees=FEES, gross_exposure=GX, n_trades=7)
    s = pd.Series(EQ)
    r = s.pct_change().dropna()
    years = 5 * 4 / (365 * 24)
    expected = {
        "total_return": 0.06, "cagr": 1.06 ** (1 / years) - 1, "ann_volatility": r.std() * math.sqrt(bpy),
        "sharpe": r.mean() / r.std() * math.sqrt(bpy),
        "sortino": r.mean() / math.sqrt((r.clip(upper=0) ** 2).mean()) * math.sqrt(bpy),
        "max_drawdown": 1 - 990 / 1010, "turnover": (0.8 + 0.1 + 0.5 + 0.0 + 0.2) / 5 * bpy, "total_turnover": 1.6,
        "fees": 1.6, "fees_frac": 1.6 / 1000, "exposure": (0.8 + 0.8 + 1e-13 + 1e-11 + 0.9) / 5,
        "hit_rate": 2 / 4,  # exposed: +1 %, -1.98 %, 0 % (1e-11), +2.9 %; the 1e-13 bar (+4 %) is not
        "n_bars": 5.0, "n_trades": 7.0, "years": years, "span_days": years * 365, "initial_equity": 1000.0,
        "final_equity": 1060.0, "ruined": 0.0,
    }
    expected["calmar"] = expected["cagr"] / expected["max_drawdown"]
    for k, v in expected.items():
        assert m[k] == pytest.approx(v, rel=1e-12), k


def test_without_timestamps_the_span_is_the_bar_count_over_bars_per_year():
    m = M.compute_metrics(EQ, bars_per_year=8760.0)
    assert m["years"] == pytest.approx(5 / 8760, rel=1e-15) and m["span_days"] == pytest.approx(5 * 365 / 8760, rel=1e-15)
    # timestamps win over the bar count: 5 bars over 10 days
    m = M.compute_metrics(EQ, bars_per_year=8760.0, timestamps=np.arange(6) * 2 * DAY)
    assert m["span_days"] == pytest.approx(10.0, rel=1e-15)


def test_missing_optional_arrays_give_nan_for_their_metrics_only():
    m = M.compute_metrics(EQ, bars_per_year=365.0)
    for k in ("turnover", "total_turnover", "fees", "fees_frac", "exposure", "hit_rate", "n_trades"):
        assert math.isnan(m[k]), k
    for k in ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "calmar", "years", "final_equity"):
        assert math.isfinite(m[k]), k


def test_an_empty_curve_gives_undefined_figures_and_counts_of_zero():
    m = M.compute_metrics([], bars_per_year=365.0, timestamps=[], turnover=[], fees=[], gross_exposure=[], n_trades=0)
    assert m["n_bars"] == 0.0 and m["n_trades"] == 0.0 and m["ruined"] == 0.0 and m["max_drawdown"] == 0.0
    assert m["total_turnover"] == 0.0 and m["fees"] == 0.0
    for k in ("total_return", "cagr", "sharpe", "turnover", "fees_frac", "exposure", "hit_rate", "years",
              "span_days", "initial_equity", "final_equity"):
        assert math.isnan(m[k]), k


@pytest.mark.parametrize("key", ["turnover", "fees", "gross_exposure"])
@pytest.mark.parametrize("n", [5, 7])
def test_a_per_bar_array_of_the_wrong_length_is_refused_naming_both_lengths(key, n):
    with pytest.raises(ValueError, match=rf"^per-bar array has {n} entries for 6 equity values$"):
        M.compute_metrics(EQ, bars_per_year=365.0, **{key: np.zeros(n)})


@pytest.mark.parametrize("n", [0, 5, 7])
def test_timestamps_of_the_wrong_length_are_refused_naming_both_lengths(n):
    with pytest.raises(ValueError, match=rf"^timestamps has {n} entries for 6 equity values$"):
        M.compute_metrics(EQ, bars_per_year=365.0, timestamps=np.arange(n) * DAY)


def test_per_bar_arrays_are_cut_at_ruin_like_the_curve():
    eq = [100.0, 120.0, 60.0, -10.0, 50.0, 80.0]  # ruined at bar 3: bars 4-5 count for nothing
    to = [0.0, 1.0, 0.5, 0.25, 9.0, 9.0]
    gx = [0.0, 1.0, 1.0, 1.0, 9.0, 9.0]
    m = M.compute_metrics(eq, bars_per_year=10.0, timestamps=np.arange(6) * DAY, turnover=to, fees=to,
                          gross_exposure=gx)
    assert m["total_turnover"] == 1.75 and m["fees"] == 1.75 and m["turnover"] == pytest.approx(1.75 / 3 * 10)
    assert m["exposure"] == 1.0 and m["hit_rate"] == pytest.approx(1 / 3)  # +20 %, -50 %, -100 %
    assert m["years"] == pytest.approx(3 / 365) and m["final_equity"] == 0.0 and m["ruined"] == 1.0
    assert m["initial_equity"] == 100.0 and m["fees_frac"] == pytest.approx(0.0175)


def test_figures_do_not_depend_on_the_currency_unit_but_money_does():
    a = M.compute_metrics(EQ, bars_per_year=365.0, fees=FEES)
    b = M.compute_metrics(np.array(EQ) * 1e3, bars_per_year=365.0, fees=np.array(FEES) * 1e3)
    for k in ("total_return", "sharpe", "sortino", "max_drawdown", "calmar", "fees_frac"):
        assert a[k] == pytest.approx(b[k], rel=1e-12), k
    assert b["fees"] == pytest.approx(a["fees"] * 1e3) and b["final_equity"] == pytest.approx(a["final_equity"] * 1e3)
