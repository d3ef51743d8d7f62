"""Broken files: each kind gets a clear one-line error naming the file, line/column and rule, or a
documented repair reported in the validation report. Never a deep traceback, never a wrong number."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from factorgym.data_layer.sources.files import import_candle_file
from factorgym.errors import DataValidationError, FactorgymError

HEADER = "Date,Symbol,Open,High,Low,Close,Volume"
GOOD = [
    "2024-01-01 00:00,BTCUSDT,100,110,90,105,1.5",
    "2024-01-01 01:00,BTCUSDT,105,112,101,108,2.0",
    "2024-01-01 02:00,BTCUSDT,108,109,100,101,0.7",
    "2024-01-01 03:00,BTCUSDT,101,104,99,103,1.1",
    "2024-01-01 04:00,BTCUSDT,103,106,102,104,0.9",
]
T0 = int(dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
H = 3_600_000


def write(tmp_path: Path, rows: list[str], name: str = "feed.csv", header: str = HEADER, pre: str = "") -> Path:
    path = tmp_path / name
    path.write_text(pre + "\n".join(([header] if header else []) + rows) + "\n")
    return path


def fails(path: Path, *patterns: str, exc=DataValidationError, **kw) -> str:
    with pytest.raises(exc) as info:
        import_candle_file(path, **kw)
    msg = str(info.value)
    assert "\n" not in msg, msg
    for p in patterns:
        assert p in msg, f"{p!r} not in {msg!r}"
    return msg


def test_unsorted_rows_are_sorted_and_reported(tmp_path):
    res = import_candle_file(write(tmp_path, [GOOD[3], GOOD[0], GOOD[4], GOOD[1], GOOD[2]]))
    df = res.candles["BTC/USDT"]
    assert df["timestamp"].tolist() == [T0 + i * H for i in range(5)]
    assert df["close"].tolist() == [105, 108, 101, 103, 104]
    assert any("sorted 5 rows" in r for r in res.reports["BTC/USDT"].repairs)


def test_duplicate_rows_deduped_conflicts_name_both_lines(tmp_path):
    res = import_candle_file(write(tmp_path, GOOD + [GOOD[2]]))
    assert len(res.candles["BTC/USDT"]) == 5
    assert any("1 exact duplicate" in r for r in res.reports["BTC/USDT"].repairs)
    conflict = GOOD + ["2024-01-01 02:00,BTCUSDT,108,109,100,102,0.7"]  # file line 7 vs line 4
    fails(write(tmp_path, conflict), "feed.csv [BTC/USDT]", "line 4 and line 7", "2024-01-01 02:00",
          "duplicate timestamp with different values", "close=101.0 vs 102.0")


def test_nan_in_a_value(tmp_path):
    rows = GOOD.copy()
    rows[2] = "2024-01-01 02:00,BTCUSDT,108,109,100,,0.7"
    fails(write(tmp_path, rows), "feed.csv [BTC/USDT]", "line 4", "column 'close' must be finite", "NaN")


def test_negative_and_zero_prices(tmp_path):
    rows = GOOD.copy()
    rows[1] = "2024-01-01 01:00,BTCUSDT,105,112,-1,108,2.0"
    fails(write(tmp_path, rows), "line 3", "prices must be > 0", "low=-1.0")
    rows[1] = "2024-01-01 01:00,BTCUSDT,0,112,101,108,2.0"
    fails(write(tmp_path, rows), "line 3", "prices must be > 0", "open=0.0")


def test_high_below_low_and_negative_volume(tmp_path):
    rows = GOOD.copy()
    rows[3] = "2024-01-01 03:00,BTCUSDT,101,98,99,103,1.1"
    fails(write(tmp_path, rows), "line 5", "high >= low", "high=98.0 < low=99.0")
    rows = GOOD.copy()
    rows[4] = "2024-01-01 04:00,BTCUSDT,103,106,102,104,-0.9"
    fails(write(tmp_path, rows), "line 6", "volume >= 0", "volume=-0.9")


def test_wrong_or_missing_columns(tmp_path):
    fails(write(tmp_path, [r.rsplit(",", 1)[0] for r in GOOD], header="Date,Symbol,Open,High,Low,Close"),
          "feed.csv", "no volume column found", "--volume-col")
    fails(write(tmp_path, GOOD, header="Date,Symbol,Open,High,Low,Price,Volume"),
          "no close column found", "'Price'", "--close-col")
    fails(write(tmp_path, GOOD), "column 'Shut' (given for close) is not in the file", columns={"close": "Shut"})
    fails(write(tmp_path, [r + ",9" for r in GOOD], header="Date,Symbol,Open,High,Low,Close,VolumeTo,Junk"),
          "only quote volume ['VolumeTo'] found")
    fails(write(tmp_path, ["1704067200000,1,2,0.5,1.5"], header=""), "headerless file with 5 columns")


def test_empty_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    fails(empty, "empty.csv", "empty")
    fails(write(tmp_path, [], name="only_header.csv"), "only_header.csv", "no rows")
    fails(write(tmp_path, [], name="comments.csv", header="", pre="# nothing here\n# really\n"),
          "comments.csv", "empty")
    fails(tmp_path / "missing.csv", "missing.csv", "file not found")


def test_mixed_time_zones(tmp_path):
    rows = GOOD.copy()
    rows[2] = "2024-01-01T02:00:00Z,BTCUSDT,108,109,100,101,0.7"
    fails(write(tmp_path, rows), "line 4", "column 'Date'", "mixes times with and without a time zone")
    # consistent offsets that differ row to row (a DST change) are converted: a documented repair
    aware = [f"2024-03-31T0{h}:00:00{off},BTCUSDT,100,110,90,105,1" for h, off in
             ((0, "+01:00"), (1, "+01:00"), (3, "+02:00"), (4, "+02:00"))]
    df = import_candle_file(write(tmp_path, aware, name="btcusdt_berlin.csv")).candles["BTC/USDT"]
    start = int(dt.datetime(2024, 3, 30, 23, tzinfo=dt.timezone.utc).timestamp() * 1000)
    assert df["timestamp"].tolist() == [start + i * H for i in range(4)]


def test_off_grid_timestamps(tmp_path):
    rows = GOOD.copy()
    rows[3] = "2024-01-01 03:17,BTCUSDT,101,104,99,103,1.1"
    fails(write(tmp_path, rows), "line 5", "2024-01-01 03:17", "off the 1h grid", timeframe="1h")
    # a daily file in local time lands off the UTC day grid: named, with the likely cause
    fails(write(tmp_path, [f"2024-01-0{d},BTCUSDT,100,110,90,105,1" for d in range(1, 6)]),
          "off the 1d grid", "--tz", tz="America/New_York")


def test_text_in_numeric_columns(tmp_path):
    rows = GOOD.copy()
    rows[3] = "2024-01-01 03:00,BTCUSDT,101,104,99,#N/A,1.1"
    fails(write(tmp_path, rows, pre="https://www.CryptoDataDownload.com\n"), "feed.csv [BTC/USDT]",
          "line 6", "column 'Close'", "value '#N/A' is not a number")
    rows = GOOD.copy()
    rows[1] = "yesterday,BTCUSDT,105,112,101,108,2.0"
    fails(write(tmp_path, rows), "line 3", "column 'Date'", "'yesterday'", "is not a time")


def test_timestamps_in_the_future(tmp_path):
    rows = GOOD + ["2099-01-01 00:00,BTCUSDT,103,106,102,104,0.9"]
    fails(write(tmp_path, rows), "line 7", "timestamp in the future", "2099-01-01 00:00", timeframe="1h")
    # a wrong unit makes the future too: seconds read as milliseconds would be 1970, refused as well
    ms_rows = [f"{T0 + i * H},1,2,0.5,1.5,1" for i in range(5)]
    fails(write(tmp_path, ms_rows, name="BTCUSDT-1h.csv", header=""), "in the future", timestamp_unit="s")
    fails(write(tmp_path, [f"{(T0 + i * H) // 1000000},1,2,0.5,1.5,1" for i in range(5)],
                name="BTCUSDT-1h.csv", header=""), "before 2009", "--timestamp-unit")


def test_forming_bar_dropped(tmp_path):
    rows = GOOD
    res = import_candle_file(write(tmp_path, rows), now_ms=T0 + 4 * H + 60_000)
    assert len(res.candles["BTC/USDT"]) == 4
    assert any("still forming" in r for r in res.reports["BTC/USDT"].repairs)


def test_html_page_saved_as_csv(tmp_path):
    page = tmp_path / "Binance_BTCUSDT_1h.csv"
    page.write_text("<!DOCTYPE html>\n<html><head><title>Access denied</title></head>"
                    "<body>Error 1020</body></html>\n")
    fails(page, "Binance_BTCUSDT_1h.csv", "HTML", "not a CSV")
    page.write_text("\n  <html>\n<body>rate limited</body></html>")
    fails(page, "HTML")


def test_ambiguous_or_unknown_symbol(tmp_path):
    rows = [r.replace("BTCUSDT", "ABCTUSD") for r in GOOD]
    fails(write(tmp_path, rows), "ABCTUSD", "ambiguous", "--symbol")
    res = import_candle_file(write(tmp_path, rows), symbol="ABC/TUSD")  # the override resolves it
    assert list(res.candles) == ["ABC/TUSD"]
    no_sym = write(tmp_path, [r.replace(",BTCUSDT", "") for r in GOOD], name="prices.csv",
                   header="Date,Open,High,Low,Close,Volume")
    fails(no_sym, "prices.csv", "--symbol", exc=FactorgymError)


def test_ambiguous_day_month_order(tmp_path):
    rows = [f"0{d}/0{m}/2024,BTCUSDT,100,110,90,105,1" for d, m in ((1, 2), (2, 2), (3, 2))]
    fails(write(tmp_path, rows), "day/month", "--date-format")
    res = import_candle_file(write(tmp_path, rows), date_format="%d/%m/%Y")
    assert res.candles["BTC/USDT"]["timestamp"].iloc[0] == int(
        dt.datetime(2024, 2, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)


def test_partly_empty_row_is_an_error_fully_empty_row_is_no_bar(tmp_path):
    rows = GOOD.copy()
    rows[2] = "2024-01-01 02:00,BTCUSDT,,,,,"
    res = import_candle_file(write(tmp_path, rows), gap_policy="drop")
    df = res.candles["BTC/USDT"]
    assert len(df) == 4 and T0 + 2 * H not in df["timestamp"].tolist()
    assert not np.isin(0.0, df[["open", "close"]].to_numpy())
    assert res.reports["BTC/USDT"].gaps == [(T0 + 2 * H, 1)]
    rows[2] = "2024-01-01 02:00,BTCUSDT,108,,,,"
    fails(write(tmp_path, rows), "line 4", "must be finite")


def test_missing_time_value(tmp_path):
    rows = GOOD.copy()
    rows[1] = ",BTCUSDT,105,112,101,108,2.0"
    fails(write(tmp_path, rows), "line 3", "column 'Date'", "missing time")
