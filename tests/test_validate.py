"""validate_candles: every rule, its repair or its error, against independent pandas answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factorgym.data_layer.validate import GAP_POLICIES, ValidationReport, validate_candles
from factorgym.errors import ConfigError, DataValidationError

H = 3_600_000
T0 = 1_498_906_800_000  # 2017-07-01 11:00 UTC
NOW = 1_700_000_000_000


def make(n: int = 10, start: int = T0, tf: int = H, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[100.0], close[:-1]])[:n]
    high = np.maximum(open_, close) * 1.01
    low = np.minimum(open_, close) * 0.99
    return pd.DataFrame({
        "timestamp": start + tf * np.arange(n, dtype=np.int64),
        "open": open_, "high": high, "low": low, "close": close, "volume": rng.uniform(1, 5, n),
    })


def test_clean_frame_passes_unchanged():
    df = make(50)
    out, rep = validate_candles(df, "1h", name="x", now_ms=NOW)
    pd.testing.assert_frame_equal(out.drop(columns="tradable"), df)
    assert out["tradable"].all() and out["timestamp"].dtype == np.int64
    assert isinstance(rep, ValidationReport)
    assert (rep.rows, rep.first, rep.last, rep.gaps, rep.repairs, rep.warnings) == (50, T0, T0 + 49 * H, [], [], [])
    assert "50 bars" in rep.summary() and "2017-07-01 11:00" in rep.summary()
    assert rep.to_dict()["rows"] == 50
    out2, _ = validate_candles(df, "1h", name="x", gap_policy="drop", now_ms=NOW)
    pd.testing.assert_frame_equal(out2, df)


def test_unsorted_is_sorted_as_repair():
    df = make(30)
    shuffled = df.sample(frac=1.0, random_state=3).reset_index(drop=True)
    out, rep = validate_candles(shuffled, "1h", name="x", gap_policy="drop", now_ms=NOW)
    pd.testing.assert_frame_equal(out, df)
    assert any("sorted 30 rows" in r and "out of order" in r for r in rep.repairs)
    _, rep2 = validate_candles(df.iloc[::-1], "1h", name="x", now_ms=NOW)
    assert any("newest first" in r for r in rep2.repairs)


def test_exact_duplicates_dropped_conflicting_duplicates_fail():
    df = make(10)
    dup = pd.concat([df, df.iloc[[3, 7]]], ignore_index=True)
    out, rep = validate_candles(dup, "1h", name="x", gap_policy="drop", now_ms=NOW)
    pd.testing.assert_frame_equal(out, df)
    assert any("2 exact duplicate" in r for r in rep.repairs)
    bad = dup.copy()
    bad.loc[10, "close"] = bad.loc[10, "close"] * 1.001  # row 10 repeats row 3's timestamp
    with pytest.raises(DataValidationError) as e:
        validate_candles(bad, "1h", name="feed.csv", now_ms=NOW)
    msg = str(e.value)
    assert "feed.csv" in msg and "row 3" in msg and "row 10" in msg and "duplicate timestamp" in msg
    assert "2017-07-01 14:00" in msg and "close=" in msg


def test_off_grid_fails_with_row():
    df = make(5)
    df.loc[2, "timestamp"] += 60_000
    with pytest.raises(DataValidationError, match=r"x: row 2 .*off the 1h grid"):
        validate_candles(df, "1h", name="x", now_ms=NOW)


def test_weekly_bars_may_open_on_monday():
    monday = 1_704_067_200_000  # 2024-01-01 00:00 UTC, a Monday; not a multiple of 7 days since 1970
    df = make(6, start=monday, tf=7 * 86_400_000)
    out, _ = validate_candles(df, "1w", name="w", now_ms=NOW * 2)
    assert len(out) == 6


def test_gap_mark_carries_previous_close_and_never_backfills():
    df = make(12).drop(index=[4, 5, 9]).reset_index(drop=True)
    out, rep = validate_candles(df, "1h", name="x", gap_policy="mark", now_ms=NOW)
    assert rep.gaps == [(T0 + 4 * H, 2), (T0 + 9 * H, 1)]
    # independent answer: reindex on the full grid, forward-fill close
    grid = pd.RangeIndex(T0, T0 + 12 * H, H)
    ref = df.set_index("timestamp").reindex(grid)
    filled = ref["close"].ffill()
    missing = ref["close"].isna().to_numpy()
    np.testing.assert_array_equal(out["timestamp"], grid.to_numpy())
    np.testing.assert_array_equal(out["tradable"], ~missing)
    for col in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(out[col].to_numpy()[missing], filled.to_numpy()[missing])
    assert (out["volume"].to_numpy()[missing] == 0).all()
    # look-ahead: changing the bar after a gap must not change the inserted bars
    later = df.copy()
    later.loc[4, ["open", "high", "low", "close"]] *= 2
    out2, _ = validate_candles(later, "1h", name="x", now_ms=NOW)
    np.testing.assert_array_equal(out2["close"].to_numpy()[missing], out["close"].to_numpy()[missing])
    assert any("marked 3 missing bar(s) in 2 gap(s)" in r for r in rep.repairs)


def test_gap_drop_leaves_bars_absent():
    df = make(12).drop(index=[4, 5]).reset_index(drop=True)
    out, rep = validate_candles(df, "1h", name="x", gap_policy="drop", now_ms=NOW)
    pd.testing.assert_frame_equal(out, df)
    assert rep.gaps == [(T0 + 4 * H, 2)] and "tradable" not in out


def test_marked_gaps_are_counted_when_revalidated():
    df = make(12).drop(index=[4, 5]).reset_index(drop=True)
    marked, _ = validate_candles(df, "1h", name="x", now_ms=NOW)
    again, rep = validate_candles(marked, "1h", name="x", now_ms=NOW)
    pd.testing.assert_frame_equal(again, marked)
    assert rep.gaps == [(T0 + 4 * H, 2)] and rep.repairs == []


@pytest.mark.parametrize(
    "col,value,rule",
    [
        ("close", np.nan, "column 'close' must be finite"),
        ("volume", np.inf, "column 'volume' must be finite"),
        ("open", -1.0, "prices must be > 0"),
        ("low", 0.0, "prices must be > 0"),
        ("volume", -3.0, "volume >= 0"),
    ],
)
def test_value_rules(col, value, rule):
    df = make(8)
    df.loc[5, col] = value
    with pytest.raises(DataValidationError) as e:
        validate_candles(df, "1h", name="BTC/USD", now_ms=NOW)
    assert "BTC/USD" in str(e.value) and "row 5" in str(e.value) and rule in str(e.value)


def test_ohlc_consistency():
    df = make(8)
    df.loc[2, "high"] = df.loc[2, "low"] * 0.9
    with pytest.raises(DataValidationError, match=r"row 2 .*high >= low.*high=.*< low="):
        validate_candles(df, "1h", name="x", now_ms=NOW)
    df = make(8)
    df.loc[6, "close"] = df.loc[6, "high"] * 1.01
    with pytest.raises(DataValidationError, match=r"row 6 .*high >= open and high >= close"):
        validate_candles(df, "1h", name="x", now_ms=NOW)
    df = make(8)
    df.loc[1, "open"] = df.loc[1, "low"] * 0.95
    with pytest.raises(DataValidationError, match=r"row 1 .*low <= open and low <= close"):
        validate_candles(df, "1h", name="x", now_ms=NOW)


def test_error_names_original_row_after_sorting_and_line_labels():
    df = make(8).iloc[::-1].reset_index(drop=True)  # row 0 is the newest bar
    df.loc[0, "volume"] = -1.0
    with pytest.raises(DataValidationError, match=r"row 0 \(timestamp 1498932000000"):
        validate_candles(df, "1h", name="x", now_ms=NOW)
    df.index = pd.Index(np.arange(len(df)) + 3, name="line")
    with pytest.raises(DataValidationError, match=r"x: line 3 "):
        validate_candles(df, "1h", name="x", now_ms=NOW)


def test_extreme_jump_is_a_warning():
    df = make(10)
    df.loc[6:, ["open", "high", "low", "close"]] *= 3.0
    df.loc[6, "open"] = df.loc[5, "close"]
    df.loc[6, "low"] = df.loc[5, "close"] * 0.99
    out, rep = validate_candles(df, "1h", name="x", now_ms=NOW)
    assert len(out) == 10
    assert len(rep.warnings) == 1 and "1 extreme close-to-close jump" in rep.warnings[0]
    assert "2017-07-01 17:00" in rep.warnings[0]
    _, rep = validate_candles(df, "1h", name="x", now_ms=NOW, jump_threshold=2.0)
    assert rep.warnings == []


def test_future_bars_fail_and_forming_bar_is_dropped():
    df = make(10)
    now = T0 + 9 * H + 1_000  # the last bar opened 1 s ago: still forming
    out, rep = validate_candles(df, "1h", name="x", now_ms=now)
    assert len(out) == 9 and out["timestamp"].iloc[-1] == T0 + 8 * H
    assert any("still forming" in r for r in rep.repairs)
    out, rep = validate_candles(df, "1h", name="x", now_ms=T0 + 10 * H)  # closed exactly at now
    assert len(out) == 10 and rep.repairs == []
    with pytest.raises(DataValidationError, match=r"row 9 .*timestamp in the future.*1 row"):
        validate_candles(df, "1h", name="x", now_ms=T0 + 8 * H + 5)
    # default now: the wall clock; a year-2100 bar is refused
    df.loc[9, "timestamp"] = 4_102_444_800_000
    with pytest.raises(DataValidationError, match="in the future"):
        validate_candles(df, "1h", name="x")


def test_datetime_timestamps_and_text_and_missing_columns():
    df = make(4)
    dt = df.copy()
    dt["timestamp"] = pd.to_datetime(df["timestamp"], unit="ms", utc=True).dt.tz_convert("Europe/Berlin")
    out, _ = validate_candles(dt, "1h", name="x", gap_policy="drop", now_ms=NOW)
    pd.testing.assert_frame_equal(out, df)
    txt = df.astype({"close": object})
    txt.loc[2, "close"] = "n/a"
    with pytest.raises(DataValidationError, match=r"row 2: column 'close': value 'n/a' is not a number"):
        validate_candles(txt, "1h", name="x", now_ms=NOW)
    with pytest.raises(DataValidationError, match=r"missing column\(s\) \['volume'\]"):
        validate_candles(df.drop(columns="volume"), "1h", name="x", now_ms=NOW)
    frac = df.astype({"timestamp": float})
    frac.loc[1, "timestamp"] += 0.5
    with pytest.raises(DataValidationError, match="row 1.*not an integer"):
        validate_candles(frac, "1h", name="x", now_ms=NOW)


def test_empty_frame_and_bad_options():
    out, rep = validate_candles(make(0), "1h", name="x", now_ms=NOW)
    assert len(out) == 0 and rep.rows == 0 and rep.first is None
    with pytest.raises(ConfigError, match="gap policy"):
        validate_candles(make(3), "1h", name="x", gap_policy="ffill")
    with pytest.raises(ConfigError, match="timeframe"):
        validate_candles(make(3), "1 hour", name="x")
    assert GAP_POLICIES == ("mark", "drop")


@settings(max_examples=40, deadline=None)
@given(
    keep=st.lists(st.booleans(), min_size=2, max_size=60),
    seed=st.integers(0, 10_000),
    policy=st.sampled_from(GAP_POLICIES),
)
def test_property_order_free_and_full_grid(keep, seed, policy):
    keep[0] = keep[-1] = True
    df = make(len(keep), seed=seed)[np.array(keep)].reset_index(drop=True)
    shuffled = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    a, ra = validate_candles(df, "1h", name="x", gap_policy=policy, now_ms=NOW)
    b, rb = validate_candles(shuffled, "1h", name="x", gap_policy=policy, now_ms=NOW)
    pd.testing.assert_frame_equal(a, b)
    assert ra.gaps == rb.gaps
    assert sum(n for _, n in ra.gaps) == keep.count(False)
    if policy == "mark":
        np.testing.assert_array_equal(a["timestamp"], T0 + H * np.arange(len(keep)))
        np.testing.assert_array_equal(a["tradable"], np.array(keep))
    else:
        pd.testing.assert_frame_equal(a, df)


def test_large_reversed_frame_with_gaps():
    """(Its speed is a figure of benchmarks/data_io.py, not an assertion here.)"""
    df = make(100_000)
    df = df.drop(index=np.arange(10, 100_000, 1000)).iloc[::-1].reset_index(drop=True)
    out, rep = validate_candles(df, "1h", name="x", now_ms=10**14)
    assert len(out) == 100_000 and len(rep.gaps) == 100
    np.testing.assert_array_equal(out["timestamp"], T0 + H * np.arange(100_000))
    assert (~out["tradable"]).sum() == 100  # the gap rows, filled and marked untradable
