"""No silent data mistakes on the way into the store (issue 11, item 2): base vs quote volume,
a wide file missing a field, overlapping imports with different values, calendar timeframes,
`validate` that says "repaired", and temp files left by a killed writer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factorgym.cli import main
from factorgym.data_layer.build import build_tensor_from_candles
from factorgym.data_layer.sources.files import import_candle_file
from factorgym.data_layer.store import CandleStore
from factorgym.data_layer.timeframes import timeframe_to_ms
from factorgym.errors import ConfigError, DataValidationError

H = 3_600_000
DAY = 86_400_000


def _bars(n: int, start: str = "2024-01-01", freq: str = "h", seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 40_000 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]]
    return pd.DataFrame({
        "date": pd.date_range(start, periods=n, freq=freq).strftime("%Y-%m-%d %H:%M"),
        "open": open_, "high": np.maximum(open_, close) * 1.001, "low": np.minimum(open_, close) * 0.999,
        "close": close, "base": rng.uniform(1, 10, n),
    })


# ---------------------------------------------------------------- base vs quote volume
def test_base_volume_column_wins_over_a_plain_one_holding_quote_volume(tmp_path, capsys):
    b = _bars(50)
    quote = b["base"] * b["close"]
    f = tmp_path / "btcusd_1h.csv"
    pd.DataFrame({"date": b["date"], "open": b["open"], "high": b["high"], "low": b["low"], "close": b["close"],
                  "volume": quote, "volume_btc": b["base"], "Volume USD": quote}).to_csv(f, index=False)
    res = import_candle_file(f)
    np.testing.assert_allclose(res.candles["BTC/USD"]["volume"], b["base"])  # not the quote volume
    assert any("'volume_btc' (base currency)" in n for n in res.notes)
    assert main(["import", str(f), "--store", str(tmp_path / "s")]) == 0
    assert "volume: column 'volume_btc' (base currency)" in capsys.readouterr().out


def test_plain_volume_beside_another_currency_asks_for_volume_col(tmp_path):
    b = _bars(50)
    f = tmp_path / "btcusd_1h.csv"
    pd.DataFrame({"date": b["date"], "open": b["open"], "high": b["high"], "low": b["low"], "close": b["close"],
                  "volume": b["base"], "Volume USD": b["base"] * b["close"]}).to_csv(f, index=False)
    with pytest.raises(DataValidationError, match=r"cannot tell which volume column .*--volume-col"):
        import_candle_file(f)
    res = import_candle_file(f, columns={"volume": "volume"})
    np.testing.assert_allclose(res.candles["BTC/USD"]["volume"], b["base"])


def test_plain_volume_beside_a_named_quote_volume_is_the_base_one(tmp_path):
    b = _bars(50)
    f = tmp_path / "BTCUSDT-1h.csv"
    pd.DataFrame({"open_time": b["date"], "open": b["open"], "high": b["high"], "low": b["low"], "close": b["close"],
                  "volume": b["base"], "quote_asset_volume": b["base"] * b["close"]}).to_csv(f, index=False)
    res = import_candle_file(f)
    np.testing.assert_allclose(res.candles["BTC/USDT"]["volume"], b["base"])
    assert res.notes and "'volume'" in res.notes[0] and "quote_asset_volume" in res.notes[0]


# ---------------------------------------------------------------- wide file missing a field
def test_wide_file_missing_a_field_of_one_symbol_is_an_error(tmp_path):
    b, e = _bars(30, freq="D"), _bars(30, freq="D", seed=1)
    cols = {"date": b["date"]}
    for asset, d in (("BTC", b), ("ETH", e)):
        for fld in ("open", "high", "low", "close"):
            cols[f"{asset}:{fld}"] = d[fld]
        cols[f"{asset}:volume"] = d["base"]
    del cols["ETH:low"]
    f = tmp_path / "wide_usd_1d.csv"
    pd.DataFrame(cols).to_csv(f, index=False)
    with pytest.raises(DataValidationError, match=r"ETH/USD lack ETH:low.*--symbol"):
        import_candle_file(f)
    res = import_candle_file(f, symbol=["BTC/USD"])  # the documented way to leave it out
    assert list(res.candles) == ["BTC/USD"]


# ---------------------------------------------------------------- overlapping imports
def test_overlapping_import_with_different_values_errors_then_replace_or_keep(tmp_path, capsys):
    b = _bars(48)
    first = tmp_path / "btcusd_1h.csv"
    b.rename(columns={"base": "volume"}).to_csv(first, index=False)
    store = tmp_path / "store"
    assert main(["import", str(first), "--store", str(store), "--source", "mine"]) == 0
    revised = b.rename(columns={"base": "volume"}).iloc[24:].copy()
    revised.loc[30, "close"] = revised.loc[30, "close"] * 1.0001  # still a valid bar, another value
    revised.loc[30, "high"] = max(revised.loc[30, "high"], revised.loc[30, "close"])
    second = tmp_path / "btcusd_1h_v2.csv"
    revised.to_csv(second, index=False)
    capsys.readouterr()
    assert main(["import", str(second), "--store", str(store), "--source", "mine"]) == 1
    err = capsys.readouterr().err
    assert "1 bar(s) already stored with different values, first 2024-01-02 06:00 UTC" in err
    assert f"close={float(b.loc[30, 'close'])!r}" in err and f"close={float(revised.loc[30, 'close'])!r}" in err
    cs = CandleStore(store)
    assert cs.read("mine", "BTC/USD", "1h")["close"].iloc[30] == b.loc[30, "close"]  # nothing written
    assert main(["import", str(second), "--store", str(store), "--source", "mine", "--on-conflict", "keep"]) == 0
    assert "0 new bar(s), 1 conflicting bar(s) kept as stored" in capsys.readouterr().out
    assert cs.read("mine", "BTC/USD", "1h")["close"].iloc[30] == b.loc[30, "close"]
    assert main(["import", str(second), "--store", str(store), "--source", "mine", "--on-conflict", "replace"]) == 0
    assert "0 new bar(s), 1 conflicting bar(s) replaced" in capsys.readouterr().out
    assert cs.read("mine", "BTC/USD", "1h")["close"].iloc[30] == revised.loc[30, "close"]
    assert main(["import", str(first), "--store", str(store), "--source", "mine"]) == 1  # and back: a conflict


def test_a_real_bar_fills_a_stored_gap_placeholder_without_asking(tmp_path):
    cs = CandleStore(tmp_path)
    t0 = 1_704_067_200_000
    gap = pd.DataFrame({"timestamp": [t0, t0 + H], "open": [1.0, 1.0], "high": [1.0, 1.0], "low": [1.0, 1.0],
                        "close": [1.0, 1.0], "volume": [5.0, 0.0], "tradable": [True, False]})
    cs.write("s", "A/B", "1h", gap)
    real = gap.iloc[1:].assign(open=1.1, high=1.2, low=1.0, close=1.1, volume=3.0, tradable=True)
    rep = cs.merge("s", "A/B", "1h", real)
    assert (rep.added, rep.filled, rep.replaced) == (0, 1, 0)
    assert cs.merge("s", "A/B", "1h", gap).added == 0  # the placeholder does not overwrite the real bar
    assert cs.read("s", "A/B", "1h")["close"].tolist() == [1.0, 1.1]



def test_a_placeholder_over_a_stored_placeholder_is_no_conflict_and_the_newer_stays(tmp_path):
    # neither is a real bar: nothing real changes, so no error, nothing counted, and the newer wins
    # (as every clash in the merge); a real bar beside it is never touched
    cs = CandleStore(tmp_path)
    t0 = 1_704_067_200_000
    old = pd.DataFrame({"timestamp": [t0, t0 + H], "open": [2.0, 1.0], "high": [2.0, 1.0], "low": [2.0, 1.0],
                        "close": [2.0, 1.0], "volume": [5.0, 0.0], "tradable": [True, False]})
    cs.write("s", "A/B", "1h", old)
    newer = old.assign(open=1.5, high=1.5, low=1.5, close=1.5, volume=0.0, tradable=False)
    rep = cs.merge("s", "A/B", "1h", newer)  # on_conflict="error": must not raise
    assert (rep.added, rep.filled, rep.replaced, rep.kept) == (0, 0, 0, 0)
    out = cs.read("s", "A/B", "1h")
    assert out["close"].tolist() == [2.0, 1.5] and out["tradable"].tolist() == [True, False]

# ---------------------------------------------------------------- calendar timeframes
def test_monthly_bars_are_refused_with_a_message_that_says_so(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"monthly and yearly bars \(ccxt's 1M, 1y\) are not supported"):
        timeframe_to_ms("1M")
    b = _bars(24, freq="MS")
    f = tmp_path / "btcusd_monthly.csv"
    b.rename(columns={"base": "volume"}).to_csv(f, index=False)
    with pytest.raises(ConfigError, match="calendar months.*monthly and yearly bars"):
        import_candle_file(f)
    assert main(["import", str(f), "--store", str(tmp_path / "s"), "--timeframe", "1M"]) == 1
    err = capsys.readouterr().err
    assert "monthly and yearly bars" in err and "--tz" not in err
    assert main(["download", "--symbols", "BTC/USDT", "--timeframe", "1M", "--since", "2023-01-01",
                 "--store", str(tmp_path / "s"), "--base-url", "http://127.0.0.1:9", "--max-retries", "0"]) == 1
    assert "monthly and yearly bars" in capsys.readouterr().err


def test_weekly_bars_open_on_monday_as_ccxt_and_build_a_tensor(tmp_path):
    b = _bars(80, start="2023-01-02", freq="W-MON")  # 2023-01-02 is a Monday
    f = tmp_path / "btcusd_1w.csv"
    b.rename(columns={"base": "volume"}).to_csv(f, index=False)
    res = import_candle_file(f)
    assert res.timeframe == "1w"
    frame = res.candles["BTC/USD"]
    assert pd.Timestamp(int(frame["timestamp"].iloc[0]), unit="ms").day_name() == "Monday"
    tensor = build_tensor_from_candles(res.candles, "1w", {"factors": [
        {"kind": "custom", "name": "log_return", "params": {"periods": 1}}]})
    assert tensor.n_bars == 79 and np.all(np.diff(tensor.timestamps) == 7 * DAY)


# ---------------------------------------------------------------- validate --repair
def test_validate_says_would_repair_and_writes_only_with_repair(tmp_path, capsys):
    cs = CandleStore(tmp_path)
    t0 = 1_704_067_200_000
    good = pd.DataFrame({"timestamp": t0 + H * np.arange(5), "open": 10.0, "high": 11.0, "low": 9.0,
                         "close": 10.5, "volume": 1.0})
    cs.write("s", "A/B", "1h", good)
    [path] = cs.entries()[0].files
    table = pq.read_table(path)
    unsorted = pa.concat_tables([table.slice(3), table.slice(0, 3), table.slice(1, 1)])  # out of order + a duplicate
    pq.write_table(unsorted.replace_schema_metadata(table.schema.metadata), path)
    before = path.read_bytes()
    assert main(["validate", "--store", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "would repair:" in out and "  repaired:" not in out and "run again with --repair" in out
    assert path.read_bytes() == before  # said "would", wrote nothing
    assert main(["validate", "--store", str(tmp_path), "--repair"]) == 0
    assert "  repaired:" in capsys.readouterr().out
    pd.testing.assert_frame_equal(cs.read("s", "A/B", "1h"), good)
    assert main(["validate", "--store", str(tmp_path)]) == 0
    assert "ok: no repairs" in capsys.readouterr().out


# ---------------------------------------------------------------- killed writers
def test_temp_file_of_a_killed_writer_is_removed_by_the_next_write(tmp_path, subprocess_env):
    cs = CandleStore(tmp_path)
    t0 = 1_704_067_200_000
    frame = pd.DataFrame({"timestamp": t0 + H * np.arange(5), "open": 10.0, "high": 11.0, "low": 9.0,
                          "close": 10.5, "volume": 1.0})
    cs.write("s", "A/B", "1h", frame)
    killer = textwrap.dedent(f"""
        import os, signal
        import numpy as np, pandas as pd
        from factorgym.data_layer import store as m
        os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # killed between temp write and rename
        f = pd.DataFrame({{"timestamp": {t0} + {H} * np.arange(5, 9), "open": 10.0, "high": 11.0, "low": 9.0,
                           "close": 10.5, "volume": 1.0}})
        m.CandleStore({str(tmp_path)!r}).write("s", "A/B", "1h", f)
    """)
    proc = subprocess.run([sys.executable, "-c", killer], env=subprocess_env, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    temps = lambda: [p for p in tmp_path.rglob("*.tmp")]  # noqa: E731
    assert len(temps()) == 1  # the orphan the kill left
    live = temps()[0].with_name(f".1h.parquet.{os.getpid()}.live.tmp")
    live.write_bytes(b"x")  # a temp of a writer still running is not touched
    cs.write("s", "A/B", "1h", frame.assign(timestamp=frame["timestamp"] + 5 * H))
    assert temps() == [live]
    assert len(cs.read("s", "A/B", "1h")) == 10


# ---------------------------------------------------------------- data rm (issue 11, item 4)
def test_data_rm_removes_one_series_and_its_index_entry(tmp_path, capsys):
    cs = CandleStore(tmp_path)
    t0 = 1_704_067_200_000
    frame = pd.DataFrame({"timestamp": t0 + H * np.arange(5), "open": 10.0, "high": 11.0, "low": 9.0,
                          "close": 10.5, "volume": 1.0})
    for sym in ("BTC/USD", "ETH/USD"):
        cs.write("file:x", sym, "1h", frame)
    cs.write("file:x", "BTC/USD", "4h", frame.assign(timestamp=t0 + 4 * H * np.arange(5)))
    assert main(["data", "rm", "--store", str(tmp_path), "--source", "file:x", "--symbol", "btcusd", "--dry-run"]) == 0
    assert capsys.readouterr().out.count("would remove") == 2 and len(cs.entries()) == 3
    assert main(["data", "rm", "--store", str(tmp_path), "--source", "file:x", "--symbol", "BTC/USD",
                 "--timeframe", "4h"]) == 0
    assert [(e.symbol, e.timeframe) for e in cs.entries()] == [("BTC/USD", "1h"), ("ETH/USD", "1h")]
    assert main(["data", "rm", "--store", str(tmp_path), "--source", "file:x", "--symbol", "BTC/USD"]) == 0
    assert [e.symbol for e in cs.entries()] == ["ETH/USD"] and not cs.has("file:x", "BTC/USD", "1h")
    index = (tmp_path / "file_x" / "index.json").read_text()
    assert "BTC/USD" not in index and "ETH/USD" in index and not (tmp_path / "file_x" / "BTC_USD").exists()
    capsys.readouterr()
    assert main(["data", "rm", "--store", str(tmp_path), "--source", "file:x", "--symbol", "BTC/USD"]) == 1
    assert "no stored series file:x BTC/USD" in capsys.readouterr().err
    cs.write("file:x", "BTC/USD", "1h", frame)  # and it can be stored again
    assert len(cs.read("file:x", "BTC/USD", "1h")) == 5
