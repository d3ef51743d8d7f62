"""Funding on the tensor's grid: the bar rule, point in time, store -> build, file column, exchange -> build."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from _factor_data import HOUR, frames, random_ohlcv
from factorgym.data_layer import funding as fstore
from factorgym.data_layer.build import build_tensor, build_tensor_from_candles
from factorgym.data_layer.store import CandleStore
from factorgym.errors import DataValidationError

FS = "custom_example"


def events(times, rates) -> pd.DataFrame:
    return pd.DataFrame({"timestamp": np.asarray(times, dtype=np.int64), "funding_rate": np.asarray(rates, float)})


def test_an_event_is_charged_at_the_close_of_the_bar_containing_it():
    grid = np.arange(10, 20) * HOUR  # bars opening 10:00 .. 19:00
    ev = events([9 * HOUR + 1,          # before the grid: not in the tensor
                 10 * HOUR,             # exactly at bar 10's open: bar 10
                 12 * HOUR + 1,         # inside bar 12
                 13 * HOUR - 1,         # the last ms of bar 12: still bar 12
                 15 * HOUR + 30 * 60_000,
                 20 * HOUR - 1,         # the last ms of the last bar
                 20 * HOUR],            # the close of the last bar = the next bar's open: not in the tensor
                [1, 2, 3, 4, 5, 6, 7])
    got = fstore.funding_on_grid(ev, grid, "1h")
    np.testing.assert_array_equal(got, [2, 0, 3 + 4, 0, 0, 5, 0, 0, 0, 6])
    day = fstore.funding_on_grid(events(np.arange(0, 48, 8) * HOUR, [1, 2, 4, 8, 16, 32]), np.array([0, 24]) * HOUR, "1d")
    np.testing.assert_array_equal(day, [7, 56])  # three 8-hourly events per daily bar, summed


def _perp_build(x, ev, **kw):
    c = frames(x)
    return build_tensor_from_candles(c, "1h", FS, funding={s: ev[s] for s in c if s in ev}, **kw)


def test_perturbing_the_future_never_changes_past_funding_rows():
    T = 400
    x = random_ohlcv(T, 2, seed=7)
    rng = np.random.default_rng(1)
    times = np.sort(rng.choice(T * HOUR, 120, replace=False))  # events at arbitrary milliseconds
    ev = {s: events(times, rng.normal(1e-4, 1e-4, len(times))) for s in ("S0/USD", "S1/USD")}
    base = _perp_build(x, ev)
    cut = 300 * HOUR + 17  # the future starts mid-bar
    x2 = x.copy()
    x2[300:] *= 1.5
    ev2 = {s: e.assign(funding_rate=np.where(e["timestamp"] >= cut, 0.05, e["funding_rate"])) for s, e in ev.items()}
    late = events([cut + 5, 399 * HOUR], [0.2, 0.3])  # new events after the cut too
    ev2 = {s: pd.concat([e, late]).sort_values("timestamp") for s, e in ev2.items()}
    other = _perp_build(x2, ev2)
    closed = (np.asarray(base.timestamps) + HOUR) <= cut  # bars whose close is not after the cut
    assert closed.sum() > 200 and (~closed).sum() > 50
    np.testing.assert_array_equal(other.funding[closed], base.funding[closed])
    assert not np.array_equal(other.funding[~closed], base.funding[~closed])
    # and the independent answer: the sum of the events inside each bar
    for a, s in enumerate(("S0/USD", "S1/USD")):
        t = ev[s]["timestamp"].to_numpy()
        want = [ev[s]["funding_rate"].to_numpy()[(t >= b) & (t < b + HOUR)].sum() for b in base.timestamps]
        np.testing.assert_allclose(base.funding[:, a], want, rtol=0, atol=1e-18)


def test_spot_builds_are_unchanged_and_have_no_funding():
    x = random_ohlcv(300, 2, seed=2)
    spot = build_tensor_from_candles(frames(x), "1h", FS)
    assert spot.funding is None and "funding" not in spot.meta
    perp = _perp_build(x, {"S0/USD": events([5 * HOUR], [1e-4])})
    np.testing.assert_array_equal(perp.features, spot.features)
    assert perp.content_hash() != spot.content_hash() and perp.funding[:, 1].sum() == 0  # S1 had none: 0
    assert perp.meta["funding"]["symbols"]["S1/USD"]["events"] == 0


def test_store_to_tensor_with_auto_true_and_false(tmp_path):
    store = CandleStore(tmp_path)
    x = random_ohlcv(300, 2, seed=3)
    c = frames(x)
    syms = {"S0/USD": "BTC/USDT:USDT", "S1/USD": "ETH/USDT"}  # one perpetual, one spot market
    for old, new in syms.items():
        store.write("ex", new, "1h", c[old])
    ev = events(np.arange(0, 300, 8) * HOUR + 3, np.linspace(-1e-4, 3e-4, 38))
    assert fstore.write_funding(store, "ex", "BTC/USDT:USDT", ev) == 38
    assert fstore.write_funding(store, "ex", "BTC/USDT:USDT", ev) == 0  # idempotent
    names = list(syms.values())
    t = build_tensor(store, "ex", names, "1h", FS)
    assert t.funding is not None and t.funding[:, 1].sum() == 0
    want = fstore.funding_on_grid(ev, np.asarray(t.timestamps), "1h")
    np.testing.assert_array_equal(t.funding[:, 0], want)
    assert t.meta["funding"]["source"] == "ex" and t.meta["funding"]["hash"]
    assert build_tensor(store, "ex", names, "1h", FS, funding=False).funding is None
    with pytest.raises(DataValidationError, match=r"no funding rates stored for \['ETH/USDT'\]"):
        build_tensor(store, "ex", names, "1h", FS, funding=True)
    store.write("ex", "SOL/USDT:USDT", "1h", c["S1/USD"])  # a perpetual without funding: refused under auto
    with pytest.raises(DataValidationError, match=r"\['SOL/USDT:USDT'\].*--funding"):
        build_tensor(store, "ex", ["BTC/USDT:USDT", "SOL/USDT:USDT"], "1h", FS)
    assert [e.symbol for e in store.entries()] == ["BTC/USDT:USDT", "ETH/USDT", "SOL/USDT:USDT"]


def test_file_funding_rate_column_is_imported_and_built(tmp_path, capsys):
    from factorgym.cli import main

    x = random_ohlcv(300, 1, seed=4)[:, 0]
    rate = np.where(np.arange(300) % 8 == 7, 1e-4 * (1 + np.arange(300) % 5), np.nan)  # empty cells: no event
    t0 = 1_680_000_000 // 3600 * HOUR
    df = pd.DataFrame({"timestamp": t0 + np.arange(300) * HOUR, "open": x[:, 0], "high": x[:, 1], "low": x[:, 2],
                       "close": x[:, 3], "volume": x[:, 4], "funding_rate": rate})
    path = tmp_path / "BTCUSDT_perp_1h.csv"
    df.to_csv(path, index=False)
    assert main(["import", str(path), "--symbol", "BTC/USDT", "--store", str(tmp_path / "s"),
                 "--source", "file:perp"]) == 0
    assert "wrote BTC/USDT funding: 37 new event(s)" in capsys.readouterr().out
    t = build_tensor(tmp_path / "s", "file:perp", ["BTC/USDT"], "1h", FS)
    rows = ((np.asarray(t.timestamps) - t0) // HOUR).astype(int)
    np.testing.assert_array_equal(t.funding[:, 0], np.nan_to_num(rate[rows]))  # the same bar, never shifted
    bad = df.astype({"funding_rate": object})
    bad.loc[15, "funding_rate"] = "n/a%"
    bad.to_csv(path, index=False)
    with pytest.raises(DataValidationError, match=r"column 'funding_rate' row 15 holds 'n/a%'"):
        from factorgym.data_layer.sources.files import import_candle_file

        import_candle_file(path, symbol="BTC/USDT")
