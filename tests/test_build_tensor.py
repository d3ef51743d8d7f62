"""build_tensor: alignment on one grid, listing/missing/delisted bars untradable (never zero-priced),
warm-up, meta, store path, clear errors, the CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from _factor_data import HOUR, frames, random_ohlcv
from factorgym.data_layer.build import align_candles, build_tensor, build_tensor_from_candles
from factorgym.data_layer.sources.files import load_candle_file
from factorgym.data_layer.store import CandleStore
from factorgym.errors import ConfigError, DataValidationError

SMALL_SET = {
    "factors": [
        {"kind": "talib", "name": "RSI", "params": {"timeperiod": 5}},
        {"kind": "custom", "name": "log_return", "params": {"periods": 1}},
    ],
    "normalise": {"method": "expanding", "min_periods": 10, "clip": 5.0},
}


def test_bitstamp_eth_ltc_untradable_before_listing_not_zero_priced(shared_data):
    candles = load_candle_file(shared_data / "bitstamp_btc_eth_ltc_usd_1d.csv")
    t = build_tensor_from_candles(candles, "1d", SMALL_SET, source="file:bitstamp")
    assert t.symbols == ["BTC/USD", "ETH/USD", "LTC/USD"]
    close = t.prices[..., 3]
    listing = {"ETH/USD": pd.Timestamp("2017-11-09", tz="UTC"), "LTC/USD": pd.Timestamp("2017-06-25", tz="UTC")}
    for sym, when in listing.items():
        a = t.symbols.index(sym)
        before = t.timestamps < when.value // 1_000_000
        assert before.sum() > 100
        assert not t.tradable[before, a].any()
        assert np.isnan(close[before, a]).all()          # not listed: no price at all, never 0
        assert (t.features[before, a] == 0).all()
        assert t.tradable[~before, a].sum() > 600
    # every tradable bar has finite positive prices; no zero prices anywhere
    assert np.isfinite(t.prices[t.tradable]).all() and (close[t.tradable] > 0).all()
    assert not (close == 0).any()
    # the 12-day gap of March 2019 (kept by validation as untradable flat bars) is untradable
    gap = (t.timestamps >= pd.Timestamp("2019-03-20", tz="UTC").value // 1_000_000) & (
        t.timestamps < pd.Timestamp("2019-04-01", tz="UTC").value // 1_000_000)
    assert gap.sum() == 12 and not t.tradable[gap].any()


def test_alignment_missing_and_delisted_bars():
    x = random_ohlcv(300, 3, seed=1)
    x[:40, 1] = np.nan           # lists at row 40
    x[150:153, 2] = np.nan       # 3 missing bars
    x[250:, 0] = np.nan          # delisted after row 249
    c = frames(x)
    ts, ohlcv, ok = align_candles(c, "1h")
    assert len(ts) == 300 and (np.diff(ts) == HOUR).all()
    np.testing.assert_array_equal(ok, np.isfinite(x[..., 3]))
    t = build_tensor_from_candles(c, "1h", SMALL_SET)
    W = t.meta["warmup_bars"]
    assert W == 5 + 9 and t.meta["dropped_warmup_rows"] == W
    row = lambda r: r - W  # grid row -> tensor row
    assert not t.tradable[row(150):row(153), 2].any() and t.tradable[row(153) + 0, 2]
    # missing bars carry the last close forward, volume 0: no future price
    last = x[149, 2, 3]
    np.testing.assert_array_equal(t.prices[row(150):row(153), 2, :4], last)
    assert (t.prices[row(150):row(153), 2, 4] == 0).all()
    assert not t.tradable[row(250):, 0].any()
    np.testing.assert_array_equal(t.prices[row(250):, 0, 3], x[249, 0, 3])
    # late listing: untradable through its own warm-up (W + 1 bars of history needed)
    assert not t.tradable[: row(40 + W), 1].any() and t.tradable[row(40 + W), 1]
    assert np.isnan(t.prices[: row(40), 1]).all()


def test_meta_hashes_and_determinism():
    c = frames(random_ohlcv(200, 2, seed=2))
    a = build_tensor_from_candles(c, "1h", SMALL_SET, rules={"S0/USD": {"fee": 0.001}})
    b = build_tensor_from_candles(c, "1h", SMALL_SET)
    for k in ("data_hash", "factor_set_hash", "factor_set", "normalisation", "version", "timeframe", "market_rules"):
        assert k in a.meta, k
    assert a.content_hash() == b.content_hash()
    assert a.meta["factor_set_hash"] == b.meta["factor_set_hash"]
    other = {**SMALL_SET, "normalise": {"method": "expanding", "min_periods": 11}}
    assert build_tensor_from_candles(c, "1h", other).meta["factor_set_hash"] != a.meta["factor_set_hash"]
    c2 = {k: v.assign(close=v.close * 1.01) for k, v in c.items()}
    assert build_tensor_from_candles(c2, "1h", SMALL_SET).meta["data_hash"] != a.meta["data_hash"]
    assert a.features.dtype == np.float32 and a.features.shape == (200 - a.meta["dropped_warmup_rows"], 2, 2)


def test_build_from_store_and_errors(tmp_path):
    store = CandleStore(tmp_path / "store")
    c = frames(random_ohlcv(150, 2, seed=3))
    for sym, df in c.items():
        store.write("synthetic", sym, "1h", df)
    t = build_tensor(store, "synthetic", list(c), "1h", SMALL_SET, start=10 * HOUR, end=120 * HOUR)
    assert t.timestamps[0] == (10 + t.meta["warmup_bars"]) * HOUR and t.timestamps[-1] == 119 * HOUR
    assert set(t.meta["market_rules"]) == set(c)
    with pytest.raises(DataValidationError, match=r"XRP/USD.*S0/USD"):
        build_tensor(store, "synthetic", ["S0/USD", "XRP/USD"], "1h", SMALL_SET)
    long_set = {"factors": [{"kind": "talib", "name": "SMA", "params": {"timeperiod": 500}}]}
    with pytest.raises(ConfigError, match="needs 500 bars"):
        build_tensor(store, "synthetic", list(c), "1h", long_set)


def test_off_grid_and_unsorted_candles_are_refused():
    c = frames(random_ohlcv(50, 1))
    bad = {"S0/USD": c["S0/USD"].assign(timestamp=c["S0/USD"].timestamp + 1)}
    with pytest.raises(DataValidationError, match="not on the 1h grid"):
        align_candles(bad, "1h")
    rev = {"S0/USD": c["S0/USD"].iloc[::-1]}
    with pytest.raises(DataValidationError, match="strictly increase"):
        align_candles(rev, "1h")


def test_cli_build_and_inspect(tmp_path, subprocess_env, monkeypatch, capsys):
    """`python -m factorgym build` in a child process (the installed entry point and FACTORGYM_STORE);
    inspect and the one-line error through the same cli.main in this process."""
    from factorgym.cli import main

    cfg = tmp_path / "build.yaml"
    cfg.write_text(
        "data: {source: sample:bitstamp, symbols: [BTC/USD, ETH/USD], timeframe: 1d, start: 2017-01-01}\n"
        "factors:\n  - {kind: talib, name: RSI}\n  - {kind: custom, name: log_return}\n"
        "normalise: {method: rolling, window: 60, min_periods: 30}\n"
    )
    env = {**subprocess_env, "FACTORGYM_STORE": str(tmp_path / "store")}
    out = tmp_path / "t"
    r = subprocess.run([sys.executable, "-m", "factorgym", "build", "--config", str(cfg), "--out", str(out)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "shape" in r.stdout and "untradable" in r.stdout and "NaN count" in r.stdout
    assert (tmp_path / "store").is_dir()  # the sample went into FACTORGYM_STORE
    monkeypatch.setenv("FACTORGYM_STORE", str(tmp_path / "store"))
    assert main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "RSI_14" in shown and "ETH/USD" in shown
    cfg.write_text("data: {source: sample:bitstamp, symbols: [BTC/USD], timeframe: 1d}\nfactors:\n  - {kind: talib, name: RSIX}\n")
    assert main(["build", "--config", str(cfg), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "unknown TA-Lib function 'RSIX'" in err and "Traceback" not in err and len(err.splitlines()) == 1, err


def test_bad_factor_set_configs_give_clear_errors(monkeypatch):
    from factorgym.data_layer.factors.factor_set import load_factor_set
    from factorgym.errors import MissingExtraError

    c = frames(random_ohlcv(100, 1))
    with pytest.raises(ConfigError, match=r"factors\[1\]: unknown TA-Lib function 'MACDX'.*MACD"):
        build_tensor_from_candles(c, "1h", {"factors": [{"kind": "talib", "name": "RSI"}, {"kind": "talib", "name": "MACDX"}]})
    with pytest.raises(ConfigError, match="duplicate feature names"):
        load_factor_set({"factors": [{"kind": "talib", "name": "RSI"}, {"kind": "talib", "name": "RSI"}]})
    with pytest.raises(ConfigError, match="non-empty list"):
        load_factor_set({"factors": []})
    with pytest.raises(ConfigError, match="not found"):
        load_factor_set("no_such_set")
    with pytest.raises(ConfigError, match="cross_sectional 'pct'"):
        load_factor_set({"factors": [{"kind": "talib", "name": "RSI", "cross_sectional": "pct"}]})
    monkeypatch.setitem(__import__("sys").modules, "qlib", None)  # as if the [qlib] extra were missing
    with pytest.raises(MissingExtraError, match=r"factorgym\[qlib\]"):
        build_tensor_from_candles(c, "1h", {"factors": [{"kind": "qlib", "expr": "Mean($close, 5)", "name": "m"}]})


@pytest.mark.qlib
def test_malformed_qlib_expression_is_a_config_error():
    pytest.importorskip("qlib")
    c = frames(random_ohlcv(100, 1))
    with pytest.raises(ConfigError, match="Mean"):
        build_tensor_from_candles(c, "1h", {"factors": [{"kind": "qlib", "expr": "Mean($close, 5", "name": "m"}]})
