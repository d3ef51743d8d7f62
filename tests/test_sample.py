"""Shipped sample data: exact copies of the shared real candles, loadable from an installed wheel."""

from __future__ import annotations

import doctest
import hashlib
import json
from importlib import resources

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factorgym.data_layer import sample as sample_mod
from factorgym.data_layer.sample import load_sample_into_store, sample_candles, samples
from factorgym.data_layer.sources.files import load_candle_file
from factorgym.data_layer.store import CandleStore
from factorgym.errors import ConfigError

SAMPLE_DIR = resources.files("factorgym.data_layer").joinpath("sample_data")


def test_bitfinex_sample_known_values():
    df = sample_candles("bitfinex_btcusd_1h")["BTC/USD"]
    assert len(df) == 17_583 and df["timestamp"].iloc[0] == 1_498_906_800_000
    assert df["close"].iloc[0] == 2509.17 and df["timestamp"].iloc[-1] == 1_562_202_000_000
    assert df["tradable"].all() and df["close"].dtype == np.float64


def test_samples_equal_the_shared_csvs_exactly(shared_data):
    for name, csv in (("bitfinex_btcusd_1h", "bitfinex_btcusd_1h.csv"),
                      ("bitstamp_daily", "bitstamp_btc_eth_ltc_usd_1d.csv")):
        ref = load_candle_file(shared_data / csv)
        got = sample_candles(name)
        assert sorted(got) == sorted(ref)
        for sym in ref:
            pd.testing.assert_frame_equal(got[sym], ref[sym], check_exact=True)
        manifest = json.loads(SAMPLE_DIR.joinpath("samples.json").read_text())[name]
        assert manifest["source_sha256"] == hashlib.sha256((shared_data / csv).read_bytes()).hexdigest()


def test_bitstamp_listing_region_absent_not_zero():
    drop = sample_candles("bitstamp_daily", gap_policy="drop")
    eth, ltc = drop["ETH/USD"], drop["LTC/USD"]
    assert eth["timestamp"].iloc[0] == 1_510_185_600_000  # 2017-11-09, listing
    assert ltc["timestamp"].iloc[0] == 1_498_348_800_000  # 2017-06-25
    assert (len(drop["BTC/USD"]), len(eth), len(ltc)) == (1865, 788, 925)
    assert "tradable" not in eth and (eth[["open", "high", "low", "close"]] > 0).all().all()
    marked = sample_candles("bitstamp_daily")["ETH/USD"]
    assert len(marked) == 800 and (~marked["tradable"]).sum() == 12


def test_files_are_compact_float64_parquet():
    total = 0
    for s in samples().values():
        with resources.as_file(SAMPLE_DIR.joinpath(s.file)) as path:
            schema = pq.read_schema(path)
            total += path.stat().st_size
            assert pq.ParquetFile(path).metadata.row_group(0).column(1).compression == "ZSTD"
        for col in ("open", "high", "low", "close", "volume"):
            assert schema.field(col).type == pa.float64()
        assert schema.field("timestamp").type == pa.int64()
    assert total < 2_000_000
    assert SAMPLE_DIR.joinpath("README.md").read_text().count("Apache") >= 1


def test_load_sample_into_store(tmp_path):
    store = CandleStore(tmp_path / "store")
    keys = load_sample_into_store(store)
    assert keys == [("sample:bitfinex", "BTC/USD", "1h"), ("sample:bitstamp", "BTC/USD", "1d"),
                    ("sample:bitstamp", "ETH/USD", "1d"), ("sample:bitstamp", "LTC/USD", "1d")]
    got = store.read("sample:bitstamp", "LTC/USD", "1d")
    pd.testing.assert_frame_equal(got, sample_candles("bitstamp_daily")["LTC/USD"])
    assert store.read_rules("sample:bitfinex", "BTC/USD").taker_fee == 0.001
    assert store.write("sample:bitfinex", "BTC/USD", "1h", sample_candles()["BTC/USD"]) == 0  # idempotent
    assert load_sample_into_store(CandleStore(tmp_path / "one"), "bitstamp_daily")[0][0] == "sample:bitstamp"


def test_unknown_sample_and_docstring_examples():
    with pytest.raises(ConfigError, match="unknown sample 'binance'.*bitstamp_daily"):
        sample_candles("binance")
    assert doctest.testmod(sample_mod).failed == 0
