"""File loader: the shared real files and six other exporters' layouts, against known values."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from factorgym.data_layer.candles import CANDLE_COLUMNS
from factorgym.data_layer.sources.base import OHLCVSource
from factorgym.data_layer.sources.file_columns import normalize_symbol, symbol_from_filename
from factorgym.data_layer.sources.files import FileSource, import_candle_file, load_candle_file
from factorgym.errors import ConfigError

DATA = Path(__file__).parent / "data"
H = 3_600_000
D = 86_400_000


def utc_ms(*args) -> int:
    return int(dt.datetime(*args, tzinfo=dt.timezone.utc).timestamp() * 1000)


def test_known_epoch_values():
    assert utc_ms(2017, 7, 1, 11) == 1_498_906_800_000  # guards the helper itself


def test_bitfinex_hourly_no_options(shared_data):
    res = import_candle_file(shared_data / "bitfinex_btcusd_1h.csv")
    assert (res.layout, res.timeframe, list(res.candles)) == ("long", "1h", ["BTC/USD"])
    df = res.candles["BTC/USD"]
    assert len(df) == 17_583 and df["timestamp"].dtype == np.int64
    first, last = df.iloc[0], df.iloc[-1]
    assert first["timestamp"] == 1_498_906_800_000 == utc_ms(2017, 7, 1, 11)
    assert (first["open"], first["high"], first["low"], first["close"], first["volume"]) == (
        2505.56, 2513.38, 2495.12, 2509.17, 114.6)  # VolumeFrom (base), not VolumeTo
    assert last["timestamp"] == utc_ms(2019, 7, 4, 1) and last["close"] == 11849.69
    assert (np.diff(df["timestamp"]) == H).all() and df["tradable"].all()
    # independent answer: plain pandas on the same file
    raw = pd.read_csv(shared_data / "bitfinex_btcusd_1h.csv")
    raw["ts"] = pd.to_datetime(raw["Date"]).dt.tz_localize("UTC").dt.as_unit("ms").astype("int64")
    raw = raw.sort_values("ts").reset_index(drop=True)
    np.testing.assert_array_equal(df["timestamp"], raw["ts"])
    np.testing.assert_array_equal(df["close"], raw["Close"])
    np.testing.assert_array_equal(df["volume"], raw["VolumeFrom"])
    assert any("newest first" in r for r in res.reports["BTC/USD"].repairs)


def test_bitstamp_wide_daily_no_options(shared_data):
    res = import_candle_file(shared_data / "bitstamp_btc_eth_ltc_usd_1d.csv", gap_policy="drop")
    assert (res.layout, res.timeframe) == ("wide", "1d")
    assert sorted(res.candles) == ["BTC/USD", "ETH/USD", "LTC/USD"]
    btc, eth, ltc = (res.candles[s] for s in ("BTC/USD", "ETH/USD", "LTC/USD"))
    assert btc["timestamp"].iloc[0] == utc_ms(2014, 11, 28) and btc["close"].iloc[0] == 376.28
    assert btc["timestamp"].iloc[-1] == utc_ms(2020, 1, 17) and btc["close"].iloc[-1] == 8709.49
    # not yet listed: absent, not zero
    assert eth["timestamp"].iloc[0] == utc_ms(2017, 11, 9) and eth["open"].iloc[0] == 322.15
    assert ltc["timestamp"].iloc[0] == utc_ms(2017, 6, 25)
    for f in (btc, eth, ltc):
        assert (f[["open", "high", "low", "close"]] > 0).all().all()
    assert len(btc) == 1865 and len(eth) == 1865 - 1077 and len(ltc) == 1865 - 940
    assert res.reports["BTC/USD"].gaps == [(utc_ms(2019, 3, 20), 12)]
    assert "1077 row(s) with no values" in res.reports["ETH/USD"].repairs[0]
    marked = load_candle_file(shared_data / "bitstamp_btc_eth_ltc_usd_1d.csv")["ETH/USD"]
    assert (~marked["tradable"]).sum() == 12 and len(marked) == 800


def test_binance_kline_dump_ms_no_header():
    res = import_candle_file(DATA / "BTCUSDT-1h-2024-01.csv")
    assert (res.layout, res.timeframe, list(res.candles)) == ("headerless", "1h", ["BTC/USDT"])
    df = res.candles["BTC/USDT"]
    assert df["timestamp"].iloc[0] == utc_ms(2024, 1, 1) and len(df) == 48
    assert df["open"].iloc[0] == 42283.58 and df["volume"].iloc[0] == 46.21522  # column 5, not quote volume


def test_binance_2025_dump_microseconds():
    df = load_candle_file(DATA / "ETHUSDT-1m-2025-01-01.csv")["ETH/USDT"]
    assert df["timestamp"].iloc[0] == utc_ms(2025, 1, 1) == 1_735_689_600_000
    assert (np.diff(df["timestamp"]) == 60_000).all() and df["close"].iloc[0] == 3313.73
    # an explicit unit agrees
    same = load_candle_file(DATA / "ETHUSDT-1m-2025-01-01.csv", timestamp_unit="us")["ETH/USDT"]
    pd.testing.assert_frame_equal(df, same)


def test_kraken_unix_seconds_descending_xbt_alias():
    res = import_candle_file(DATA / "Kraken_XBTEUR_1h.csv")
    df = res.candles["BTC/EUR"]  # XBT -> BTC as ccxt unifies it
    assert df["timestamp"].iloc[0] == utc_ms(2021, 1, 1) and df["timestamp"].iloc[-1] == utc_ms(2021, 1, 2, 11)
    raw = pd.read_csv(DATA / "Kraken_XBTEUR_1h.csv", skiprows=1).sort_values("unix")
    np.testing.assert_array_equal(df["volume"], raw["Volume XBT"])  # base volume, not EUR volume
    np.testing.assert_array_equal(df["close"], raw["close"])


def test_gemini_unix_ms_beats_date_column():
    res = import_candle_file(DATA / "Gemini_ETHUSD_d.csv")
    df = res.candles["ETH/USD"]
    assert res.timeframe == "1d" and df["timestamp"].iloc[0] == utc_ms(2023, 1, 1)
    raw = pd.read_csv(DATA / "Gemini_ETHUSD_d.csv", skiprows=1)
    assert df["volume"].iloc[-1] == raw["Volume ETH"].iloc[0]


def test_european_semicolon_decimal_comma_local_time():
    res = import_candle_file(DATA / "btc_eur_stunden.csv", tz="Europe/Berlin")
    df = res.candles["BTC/EUR"]  # symbol from the file name's btc_eur
    # 01.03.2021 00:00 in Berlin (CET, UTC+1) is 2021-02-28 23:00 UTC
    assert df["timestamp"].iloc[0] == utc_ms(2021, 2, 28, 23) == 1_614_553_200_000
    assert df["open"].iloc[0] == 45123.5 and df["volume"].iloc[0] == 17.44  # "45.123,50" and "17,44"
    naive = load_candle_file(DATA / "btc_eur_stunden.csv")["BTC/EUR"]  # no tz: taken as UTC
    assert naive["timestamp"].iloc[0] == utc_ms(2021, 3, 1)


def test_comment_lines_tabs_multi_symbol_any_order():
    res = import_candle_file(DATA / "multi_asset_4h.tsv")
    assert res.timeframe == "4h" and sorted(res.candles) == ["ADA/USDT", "SOL/USDT"]
    for df in res.candles.values():
        np.testing.assert_array_equal(df["timestamp"], utc_ms(2024, 1, 1) + 4 * H * np.arange(12))
    only = load_candle_file(DATA / "multi_asset_4h.tsv", symbol="sol/usdt")
    assert list(only) == ["SOL/USDT"]


def test_parquet_long_tz_aware(tmp_path):
    ts = pd.date_range("2024-03-09 19:00", periods=10, freq="h", tz="America/New_York")  # spans a DST change
    frames = []
    for sym, p in (("BTC-USDT", 68000.0), ("ETH-USDT", 3900.0)):
        frames.append(pd.DataFrame({"open_time": ts, "pair": sym, "open": p, "high": p * 1.01, "low": p * 0.99,
                                    "close": p, "volume": 1.5}))
    df = pd.concat(frames).sample(frac=1.0, random_state=1)
    path = tmp_path / "candles.parquet"
    df.to_parquet(path)
    res = import_candle_file(path)
    assert sorted(res.candles) == ["BTC/USDT", "ETH/USDT"] and res.timeframe == "1h"
    got = res.candles["ETH/USDT"]["timestamp"]
    assert got.iloc[0] == utc_ms(2024, 3, 10, 0)  # 19:00 EST = 00:00 UTC
    assert (np.diff(got) == H).all() and len(got) == 10


def test_wide_underscore_with_quote_and_datetime_index(tmp_path):
    idx = pd.date_range("2024-01-01", periods=5, freq="D", tz="UTC")
    df = pd.DataFrame({f"{a}_{f}": [10.0, 11, 12, 13, 14] if f != "volume" else 1.0
                       for a in ("BTC", "SOL") for f in ("open", "high", "low", "close", "volume")}, index=idx)
    path = tmp_path / "prices.csv"
    df.to_csv(path)  # pandas writes the index as an unnamed first column
    with pytest.raises(ConfigError, match="--quote"):
        import_candle_file(path)
    res = import_candle_file(path, quote="USDT")
    assert sorted(res.candles) == ["BTC/USDT", "SOL/USDT"]
    assert res.candles["SOL/USDT"]["timestamp"].iloc[0] == utc_ms(2024, 1, 1)


def test_explicit_mapping_and_symbol_override(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("when,px_o,px_h,px_l,px_c,qty\n"
                    "1704067200,1.0,2.0,0.5,1.5,3\n1704070800,1.5,2.0,1.0,1.2,4\n1704074400,1.2,1.3,1.1,1.2,5\n")
    cols = {"timestamp": "when", "open": "px_o", "high": "px_h", "low": "px_l", "close": "px_c", "volume": "qty"}
    res = import_candle_file(path, columns=cols, symbol="DOGE/USDT")
    df = res.candles["DOGE/USDT"]
    assert df["timestamp"].tolist() == [1704067200000, 1704070800000, 1704074400000]
    assert df["volume"].tolist() == [3.0, 4.0, 5.0]


def test_gzip_and_zip(tmp_path):
    import gzip
    import zipfile

    src = DATA / "BTCUSDT-1h-2024-01.csv"
    gz = tmp_path / "BTCUSDT-1h.csv.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    zp = tmp_path / "BTCUSDT-1h-2024-01.zip"
    with zipfile.ZipFile(zp, "w") as z:
        z.write(src, src.name)
    ref = load_candle_file(src)["BTC/USDT"]
    pd.testing.assert_frame_equal(load_candle_file(gz)["BTC/USDT"], ref)
    pd.testing.assert_frame_equal(load_candle_file(zp)["BTC/USDT"], ref)


@pytest.mark.parametrize(
    "raw,unified",
    [("BTCUSD", "BTC/USD"), ("btc-usdt", "BTC/USDT"), ("ETH_BTC", "ETH/BTC"), ("XBTEUR", "BTC/EUR"),
     ("ETHBUSD", "ETH/BUSD"), ("BTC/USDT:USDT", "BTC/USDT:USDT"), ("SOLUSDC", "SOL/USDC"), ("ltc usd", "LTC/USD")],
)
def test_normalize_symbol(raw, unified):
    assert normalize_symbol(raw) == unified


def test_symbol_names_refused_or_found():
    with pytest.raises(ConfigError, match="ambiguous.*--symbol"):
        normalize_symbol("ABCTUSD")  # ABC/TUSD or ABCT/USD?
    with pytest.raises(ConfigError, match="not a BASE/QUOTE pair"):
        normalize_symbol("BITCOIN")
    assert symbol_from_filename(Path("Bitfinex_BTCUSD_1h.csv")) == "BTC/USD"
    assert symbol_from_filename(Path("eth_usd-daily.csv")) == "ETH/USD"
    with pytest.raises(ConfigError, match="pass --symbol"):
        symbol_from_filename(Path("prices.csv"))


def test_file_source_port(shared_data):
    src = FileSource(shared_data / "bitstamp_btc_eth_ltc_usd_1d.csv", gap_policy="drop")
    assert isinstance(src, OHLCVSource) and src.name == "file:bitstamp_btc_eth_ltc_usd_1d"
    assert src.symbols() == ["BTC/USD", "ETH/USD", "LTC/USD"]
    part = src.fetch("ETHUSD", "1d", since=utc_ms(2018, 1, 1), until=utc_ms(2018, 1, 11))
    assert part["timestamp"].tolist() == [utc_ms(2018, 1, 1) + i * D for i in range(10)]
    assert list(part.columns[:6]) == CANDLE_COLUMNS
    assert src.market_rules("ETH/USD").taker_fee == 0.001
    with pytest.raises(ConfigError, match="holds 1d bars"):
        src.fetch("ETH/USD", "1h")
    with pytest.raises(ConfigError, match="no XRP/USD"):
        src.fetch("XRP/USD", "1d")


def test_row_order_does_not_matter(tmp_path, shared_data):
    lines = (shared_data / "bitfinex_btcusd_1h.csv").read_text().splitlines()
    body = lines[1:]
    np.random.default_rng(0).shuffle(body)
    path = tmp_path / "bitfinex_btcusd_1h.csv"
    path.write_text("\n".join([lines[0], *body]) + "\n")
    pd.testing.assert_frame_equal(load_candle_file(path)["BTC/USD"],
                                  load_candle_file(shared_data / "bitfinex_btcusd_1h.csv")["BTC/USD"])
    shutil.rmtree(tmp_path, ignore_errors=True)
