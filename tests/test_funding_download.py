"""Funding-rate downloads: exact events of the fake exchange, under faults, resumed, refused for spot.

The reference is the fake exchange's own event function (``funding_row``): a download must store
exactly the settled events in the range, with none missing or doubled, however often the network fails.
"""

from __future__ import annotations

import numpy as np
import pytest

from fake_exchange import FAULT_KINDS, FUNDING_INTERVAL_MS, HOUR_MS, MARKETS, FakeExchange, funding_rate
from factorgym.data_layer import funding as fstore
from factorgym.data_layer.download import download
from factorgym.data_layer.sources.ccxt_source import CcxtSource, DownloadError
from factorgym.data_layer.store import CandleStore
from factorgym.errors import ConfigError

PERPS = ["BTC/USDT:USDT", "ETH/USDT:USDT"]


@pytest.fixture
def fx():
    with FakeExchange(fault_rate=0.0, timeout_sleep=0.9) as server:
        yield server


def fast_source(fx, **kw) -> CcxtSource:
    opts = dict(base_url=fx.url, api_options={"timeout": 600, "rateLimit": 1}, backoff_base=0.001,
                backoff_cap=0.01, progress=False, seed=0, page_limit=100, market_types=("spot", "linear"))
    opts.update(kw)
    return CcxtSource("binance", **opts)


def expected_events(symbol: str, start: int, stop: int) -> np.ndarray:
    """[n, 2] (time, rate) of the fake's events with start <= time < stop."""
    m = MARKETS[symbol.split(":")[0]]
    first = -(-max(start, m.listed_ms) // FUNDING_INTERVAL_MS) * FUNDING_INTERVAL_MS
    times = np.arange(first, stop, FUNDING_INTERVAL_MS)
    return np.array([[t, funding_rate(m, int(t))] for t in times]).reshape(-1, 2)


def stored_events(root, symbol: str) -> np.ndarray:
    return fstore.read_funding(CandleStore(root), "binance", symbol).to_numpy(dtype=np.float64)


def test_funding_download_under_faults_equals_clean_and_the_exchange(fx, tmp_path):
    start = fx.now_ms - 400 * 24 * HOUR_MS  # 1,200 events per symbol: 12 pages of 100
    clean = download("binance", PERPS, "1d", start, store=tmp_path / "clean", source=fast_source(fx), funding=True)
    assert [s.funding for s in clean.symbols] == [(1200, 1200)] * 2
    for sym in PERPS:
        np.testing.assert_array_equal(stored_events(tmp_path / "clean", sym), expected_events(sym, start, fx.now_ms + 1))

    # candles first (no faults), so that every forced fault lands on a funding request
    download("binance", PERPS, "1d", start, store=tmp_path / "faulty", source=fast_source(fx))
    fx.fault_rate = 0.3
    fx.reset_counts()
    fx.force_faults(list(FAULT_KINDS))
    faulty = download("binance", PERPS, "1d", start, store=tmp_path / "faulty",
                      source=fast_source(fx, seed=5, max_retries=20), funding=True)
    assert fx.klines_requests() == []
    funding_faults = [f for p, _, f in fx.requests if p.endswith("/fundingRate") and f]
    assert set(funding_faults) == set(FAULT_KINDS) and len(funding_faults) > len(FAULT_KINDS), funding_faults
    assert sum(v for k, v in faulty.stats.items() if k != "requests") >= sum(fx.fault_counts.values())
    for sym in PERPS:
        np.testing.assert_array_equal(stored_events(tmp_path / "faulty", sym), stored_events(tmp_path / "clean", sym))
        a = CandleStore(tmp_path / "clean").read("binance", sym, "1d")
        b = CandleStore(tmp_path / "faulty").read("binance", sym, "1d")
        assert a.equals(b) and len(a) == 399  # closed days from the first full day after start


def test_funding_resumes_after_the_newest_event_and_a_rerun_fetches_nothing_new(fx, tmp_path):
    start = fx.now_ms - 30 * 24 * HOUR_MS
    root = tmp_path / "s"
    download("binance", ["BTC/USDT:USDT"], "1h", start, store=root, source=fast_source(fx), funding=True)
    path = fstore.funding_path(CandleStore(root), "binance", "BTC/USDT:USDT")
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    fx.reset_counts()
    again = download("binance", ["BTC/USDT:USDT"], "1h", start, store=root, source=fast_source(fx), funding=True)
    assert again.symbols[0].funding == (0, 90)
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before  # not rewritten
    last = int(stored_events(root, "BTC/USDT:USDT")[-1, 0])
    assert [int(q["startTime"]) for q in fx.funding_requests()] == [last + 1]

    fx.now_ms += 3 * FUNDING_INTERVAL_MS
    later = download("binance", ["BTC/USDT:USDT"], "1h", start, store=root, source=fast_source(fx), funding=True)
    assert later.symbols[0].funding == (3, 93)
    np.testing.assert_array_equal(stored_events(root, "BTC/USDT:USDT"),
                                  expected_events("BTC/USDT:USDT", start, fx.now_ms + 1))


def test_funding_of_a_late_listing_and_an_exchange_gap(fx, tmp_path):
    m = MARKETS["NEW/USDT"]
    start = m.listed_ms - 10 * 24 * HOUR_MS
    gap = (m.listed_ms + 5 * FUNDING_INTERVAL_MS, m.listed_ms + 9 * FUNDING_INTERVAL_MS)
    fx.gaps["NEW/USDT:USDT"] = [gap]
    download("binance", ["NEW/USDT:USDT"], "1d", start, until=m.listed_ms + 20 * 24 * HOUR_MS, store=tmp_path,
             source=fast_source(fx), funding=True)
    got = stored_events(tmp_path, "NEW/USDT:USDT")
    want = expected_events("NEW/USDT:USDT", start, m.listed_ms + 20 * 24 * HOUR_MS)
    want = want[~((want[:, 0] >= gap[0]) & (want[:, 0] < gap[1]))]
    np.testing.assert_array_equal(got, want)  # nothing before the listing, the gap left empty


def test_funding_of_a_spot_market_is_refused_before_any_request(fx, tmp_path):
    with pytest.raises(ConfigError, match=r"BTC/USDT is a spot market: funding rates exist for perpetual swaps only, "
                                          r"e\.g\. BTC/USDT:USDT"):
        download("binance", ["BTC/USDT:USDT", "BTC/USDT"], "1h", "2023-01-01", store=tmp_path,
                 source=fast_source(fx), funding=True)
    assert fx.klines_requests() == [] and fx.funding_requests() == []


def test_funding_exchange_error_is_not_retried(fx, tmp_path):
    src = fast_source(fx)
    src.load_markets()
    src.exchange.markets["BTC/USDT:USDT"]["id"] = "NOPEUSDT"  # the fake answers -1121 Invalid symbol
    src.exchange.markets_by_id = None
    with pytest.raises(DownloadError, match="refused the request .*not retried"):
        list(__import__("factorgym.data_layer.sources.ccxt_funding", fromlist=["x"]).iter_funding(
            src, "BTC/USDT:USDT", fx.now_ms - 10 * FUNDING_INTERVAL_MS))
    assert len([q for p, q, f in fx.requests if p.endswith("/fundingRate")]) == 1


def test_cli_download_funding_flag(fx, tmp_path, capsys):
    from factorgym.cli import main

    rc = main(["download", "--exchange", "binance", "--symbols", "ETH/USDT:USDT", "--timeframe", "1d",
               "--since", str(fx.now_ms - 20 * 24 * HOUR_MS), "--store", str(tmp_path), "--base-url", fx.url,
               "--timeout", "600", "--no-progress", "--funding"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "ETH/USDT:USDT: +19 bars" in out and "funding +60 events, 60 stored" in out
    # the funding file is not a candle series in the store's listing
    assert [(e.symbol, e.timeframe) for e in CandleStore(tmp_path).entries()] == [("ETH/USDT:USDT", "1d")]


def test_downloaded_funding_lands_on_the_built_tensor(fx, tmp_path):
    from factorgym.data_layer.build import build_from_config

    start = fx.now_ms - 40 * 24 * HOUR_MS
    download("binance", ["BTC/USDT:USDT", "ETH/USDT"], "1h", start, store=tmp_path, source=fast_source(fx))
    download("binance", ["BTC/USDT:USDT"], "1h", start, store=tmp_path, source=fast_source(fx), funding=True)
    cfg = {"data": {"source": "binance", "symbols": ["BTC/USDT:USDT", "ETH/USDT"], "timeframe": "1h"},
           "factor_set": "custom_example"}
    t = build_from_config(cfg, store=tmp_path)
    ts = np.asarray(t.timestamps)
    on_event = ts % FUNDING_INTERVAL_MS == 0  # the fake settles at 00:00, 08:00, 16:00: the bar opening then
    m = MARKETS["BTC/USDT"]
    np.testing.assert_array_equal(t.funding[on_event, 0], [funding_rate(m, int(x)) for x in ts[on_event]])
    assert (t.funding[~on_event] == 0).all() and (t.funding[:, 1] == 0).all()  # spot ETH/USDT: none
    assert t.meta["funding"]["source"] == "binance"
    assert build_from_config({**cfg, "data": {**cfg["data"], "funding": False}}, store=tmp_path).funding is None


def test_pages_are_checked_before_use():
    from factorgym.data_layer.sources.ccxt_funding import check_page
    from factorgym.data_layer.sources.ccxt_source import BadPage

    def seen(*rows):
        return {"ok_container": True, "container": "list", "rows": [
            {"timestamp": t, "fundingRate": r, "symbol": s, "info": {}} for t, r, s in rows]}

    sym = "BTC/USDT:USDT"
    ok = check_page([], seen((10, 1e-4, sym), (20, -2e-4, sym)), sym, 10, 100, 5)
    np.testing.assert_array_equal(ok, [[10, 1e-4], [20, -2e-4]])
    for bad, match in [
        (seen((10, None, sym)), "missing or non-numeric"),
        (seen((None, 1e-4, sym)), "missing or non-numeric"),
        (seen((10, float("nan"), sym)), "non-finite"),
        (seen((10, 1e-4, "ETH/USDT:USDT")), "in a page for"),
        (seen((20, 1e-4, sym), (20, 1e-4, sym)), "out of order, duplicated"),
        (seen((5, 1e-4, sym)), "before the requested start"),
        (seen(*[(10 + i, 0.0, sym) for i in range(6)]), "6 funding rows for a limit of 5"),
        ({"ok_container": False, "container": "str", "rows": []}, "not a JSON list"),
    ]:
        with pytest.raises(BadPage, match=match):
            check_page([], bad, sym, 10, 100, 5)


def test_binance_market_kinds_follow_the_symbols():
    from factorgym.data_layer.sources.ccxt_funding import market_types_for

    assert market_types_for(["BTC/USDT", "ETH/BTC"]) == ("spot",)  # spot downloads load spot markets only
    assert market_types_for(["BTC/USDT:USDT", "BTC/USD:BTC", "ETH/USDT"]) == ("spot", "linear", "inverse")
