"""The loop's candle panel (envs/live/candle_panel.py) from each way an exchange serves candles:
ccxt's lists, numpy columns per symbol, one panel; paging, a page's overlap, gaps, repeated times."""

from __future__ import annotations

import math

import numpy as np
import pytest

from factorgym.envs.live.candle_panel import PAGE, CandlePanel, fetch_panel

H = 3_600_000
FIELDS = ("open", "high", "low", "close", "volume")


def _candles(T, A, missing):
    """{symbol index: [[ts, o, h, l, c, v], ...]} with the (bar, asset) pairs in ``missing`` left out."""
    rng = np.random.default_rng(3)
    x = rng.uniform(1, 2, size=(T, A, 5))
    return x, {i: [[t * H, *x[t, i].tolist()] for t in range(T) if (t, i) not in missing] for i in range(A)}


def _servers(lists, overlap):
    """fetch_ohlcv / ohlcv_arrays / ohlcv_panel over ``lists``; each page starts ``overlap`` candles
    before ``since`` (an exchange that pages with an overlap) and holds at most ``limit``."""
    def fetch_ohlcv(sym, since, limit):
        rows = lists[sym]
        k = next((n for n, c in enumerate(rows) if c[0] >= since), len(rows))
        return rows[max(k - overlap, 0): max(k - overlap, 0) + limit]

    def ohlcv_arrays(sym, since, limit):
        a = np.array(fetch_ohlcv(sym, since, limit), dtype=np.float64).reshape(-1, 6)
        return {"time": a[:, 0].astype(np.int64), **{f: a[:, j + 1] for j, f in enumerate(FIELDS)}}

    def ohlcv_panel(symbols, since, limit):
        times = sorted({c[0] for s in symbols for c in lists[s] if c[0] >= since})[:limit]
        out = np.full((len(times), len(symbols), 5), np.nan)
        for j, s in enumerate(symbols):
            for c in lists[s]:
                if c[0] in times:
                    out[times.index(c[0]), j] = c[1:]
        return {"time": np.array(times, dtype=np.int64), "ohlcv": out}

    return {"fetch_ohlcv": fetch_ohlcv, "ohlcv_arrays": ohlcv_arrays, "ohlcv_panel": ohlcv_panel}


@pytest.mark.parametrize("path", ["fetch_ohlcv", "ohlcv_arrays", "ohlcv_panel"])
@pytest.mark.parametrize("overlap", [0, 3])
def test_panel_is_every_candle_once_by_time_whichever_way_it_is_served(path, overlap):
    T, A = 2 * PAGE + 37, 3  # (three pages)
    missing = {(5, 1), (6, 1), (PAGE, 0), (T - 1, 2)} | {(t, 2) for t in range(0, 40)}  # (asset 2 lists late)
    x, lists = _candles(T, A, missing)
    serve = _servers(lists, overlap if path != "ohlcv_panel" else 0)
    since = 3 * H
    panel = fetch_panel(list(range(A)), since, H, **{path: serve[path]})
    assert panel.times.tolist() == [t * H for t in range(3, T)]
    for t in range(3, T):
        for i in range(A):
            got = panel.ohlcv[t - 3, i]
            if (t, i) in missing:
                assert np.isnan(got).all()
            else:
                assert got.tolist() == x[t, i].tolist()
    assert panel.first_time() == 3 * H
    np.testing.assert_array_equal(panel.bar(6 * H)[1], np.full(5, np.nan))
    assert panel.bar(6 * H)[0].tolist() == x[6, 0].tolist()
    assert np.isnan(panel.bar(T * H)).all() and panel.opens(T * H) == {}
    assert panel.opens(6 * H) == {0: x[6, 0, 0]}  # (asset 1 has no bar 6; asset 2 is not listed yet)


def test_repeated_and_out_of_order_candles_keep_the_first_served():
    rows = [[2 * H, 1, 1, 1, 1, 1], [1 * H, 2, 2, 2, 2, 2], [2 * H, 9, 9, 9, 9, 9], [3 * H, 3, 3, 3, 3, 3]]
    panel = fetch_panel(["A"], 0, H, fetch_ohlcv=lambda s, since, limit: [r for r in rows if r[0] >= since][:limit])
    assert panel.times.tolist() == [H, 2 * H, 3 * H]
    assert panel.ohlcv[:, 0, 0].tolist() == [2.0, 1.0, 3.0]


def test_a_candle_with_a_missing_field_is_nan_and_an_empty_exchange_has_no_first_time():
    panel = fetch_panel(["A", "B"], 0, H, fetch_ohlcv=lambda s, since, limit: [[0, 1.0, 2.0, 0.5, 1.5, None]] if s == "A" else [])
    assert math.isnan(panel.ohlcv[0, 0, 4]) and np.isnan(panel.ohlcv[0, 1]).all()
    assert fetch_panel(["A"], 0, H, fetch_ohlcv=lambda s, since, limit: []).first_time() is None
    assert len(CandlePanel(np.zeros(0, np.int64), np.zeros((0, 1, 5)))) == 0
