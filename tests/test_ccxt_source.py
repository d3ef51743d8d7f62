"""CcxtSource against a real ``ccxt.binance`` talking to the loopback fake exchange.

Independent answers: candles are checked against the fake's own row function (``kline_row``) and
market rules against the fake's filter strings, not against anything the source computes.
"""

from __future__ import annotations

import random
import time

import numpy as np
import pytest

from fake_exchange import HOUR_MS, MARKETS, FakeExchange, kline_row
from factorgym.data_layer.sources.base import OHLCVSource
from factorgym.data_layer.sources.ccxt_source import CcxtSource, DownloadError, RetryPolicy
from factorgym.errors import ConfigError


@pytest.fixture
def fx():
    with FakeExchange(fault_rate=0.0, timeout_sleep=0.9) as server:
        yield server


def make_source(fx, **kw) -> CcxtSource:
    opts = dict(base_url=fx.url, api_options={"timeout": 600}, backoff_base=0.001, backoff_cap=0.01,
                progress=False, seed=0)
    opts.update(kw)
    return CcxtSource("binance", **opts)


def expected_rows(symbol: str, start: int, stop: int, tf: int = HOUR_MS) -> np.ndarray:
    """The fake's closed bars in [start, stop), parsed the way Binance's strings read."""
    m = MARKETS[symbol]
    rows = [kline_row(m, t, tf) for t in range(start, stop, tf)]
    return np.array([[r[0], *map(float, r[1:6])] for r in rows])


def test_base_url_replaces_every_api_host(fx):
    src = make_source(fx)
    urls = src.exchange.urls["api"]
    assert urls and all(u.startswith(fx.url + "/") for u in urls.values())
    assert urls["public"] == fx.url + "/api/v3"
    assert src.exchange.options["fetchMarkets"] == {"types": ["spot"]}
    assert src.exchange.enableRateLimit is True
    assert isinstance(src, OHLCVSource)
    assert src.page_limit == 1000  # from ccxt's features for binance spot


def test_market_rules_round_trip_from_exchange_info(fx):
    src = make_source(fx)
    for symbol, m in MARKETS.items():
        rules = src.market_rules(symbol)
        assert rules.symbol == symbol and rules.origin == "ccxt:binance"
        assert rules.price_step == float(m.tick_size)
        assert rules.amount_step == float(m.step_size)
        assert rules.min_amount == float(m.min_qty)
        assert rules.min_notional == float(m.min_notional)
        assert rules.maker_fee == 0.001 and rules.taker_fee == 0.001  # Binance spot base tier
        assert type(rules).from_dict(rules.to_dict()) == rules
    assert set(src.symbols()) == set(MARKETS)
    assert fx.path_counts["/api/v3/exchangeInfo"] == 1  # loaded once


def test_candles_equal_the_exchange_and_stop_before_the_forming_bar(fx):
    src = make_source(fx, page_limit=300)
    now = fx.now_ms
    cutoff = (now // HOUR_MS) * HOUR_MS
    assert now > cutoff  # the fake's "now" is inside a bar, which the fake returns still forming
    start = cutoff - 1000 * HOUR_MS
    got = src.fetch("BTC/USDT", "1h", since=start)
    want = expected_rows("BTC/USDT", start, cutoff)
    assert len(got) == 1000 and got["timestamp"].iloc[-1] == cutoff - HOUR_MS
    np.testing.assert_array_equal(got.to_numpy(), want)
    assert got["timestamp"].dtype == np.int64
    # the fake did serve the forming bar on the last page; the source cut it
    last_q = fx.klines_requests()[-1]
    assert int(last_q["startTime"]) + int(last_q["limit"]) * HOUR_MS >= cutoff


def test_until_and_unaligned_since(fx):
    src = make_source(fx, page_limit=1000)
    base = (fx.now_ms // HOUR_MS) * HOUR_MS - 500 * HOUR_MS
    got = src.fetch("ETH/USDT", "1h", since=base + 1, until=base + 100 * HOUR_MS)
    # since rounds up to the next bar; until is exclusive
    np.testing.assert_array_equal(got.to_numpy(), expected_rows("ETH/USDT", base + HOUR_MS, base + 100 * HOUR_MS))


def test_forming_bar_excluded_when_now_is_exactly_a_bar_open(fx):
    fx.now_ms = (fx.now_ms // HOUR_MS) * HOUR_MS  # the new bar opened this very millisecond
    src = make_source(fx)
    got = src.fetch("BTC/USDT", "1h", since=fx.now_ms - 10 * HOUR_MS)
    assert got["timestamp"].iloc[-1] == fx.now_ms - HOUR_MS and len(got) == 10


def test_listing_after_since_and_exchange_gap(fx):
    src = make_source(fx, page_limit=100)
    listed = MARKETS["NEW/USDT"].listed_ms
    first_bar = -(-listed // HOUR_MS) * HOUR_MS
    got = src.fetch("NEW/USDT", "1h", since=first_bar - 2000 * HOUR_MS, until=first_bar + 50 * HOUR_MS)
    np.testing.assert_array_equal(got.to_numpy(), expected_rows("NEW/USDT", first_bar, first_bar + 50 * HOUR_MS))
    # a 300-bar outage (longer than a page) is skipped, not filled
    a = first_bar + 20 * HOUR_MS
    fx.gaps["NEW/USDT"] = [(a, a + 300 * HOUR_MS)]
    got = src.fetch("NEW/USDT", "1h", since=first_bar, until=first_bar + 400 * HOUR_MS)
    ts = got["timestamp"].to_numpy()
    assert len(ts) == 100 and not ((ts >= a) & (ts < a + 300 * HOUR_MS)).any()


@pytest.mark.parametrize("kind", ["html", "nulls", "truncated", "500", "502", "503", "504", "429", "418",
                                  "timeout", "disconnect"])
def test_each_fault_is_retried_and_the_page_recovered(fx, kind):
    src = make_source(fx, page_limit=200)
    start = (fx.now_ms // HOUR_MS) * HOUR_MS - 400 * HOUR_MS
    src.load_markets()
    fx.force_faults([kind, kind])
    got = src.fetch("BTC/USDT", "1h", since=start)
    np.testing.assert_array_equal(got.to_numpy(), expected_rows("BTC/USDT", start, start + 400 * HOUR_MS))
    retried = sum(v for k, v in src.stats.items() if k != "requests")
    assert retried >= 2 and len(src.delays) == retried  # >=: a busy machine may add a client timeout


@pytest.mark.parametrize("kind, error", [("html", "not a JSON list"), ("truncated", "not a JSON list"),
                                         ("nulls", "missing, non-numeric")])
def test_bad_pages_fail_with_exchange_symbol_and_page_start(fx, kind, error):
    src = make_source(fx, max_retries=2)
    start = (fx.now_ms // HOUR_MS) * HOUR_MS - 50 * HOUR_MS
    src.load_markets()
    fx.force_faults([kind] * 3)
    with pytest.raises(DownloadError) as info:
        src.fetch("BTC/USDT", "1h", since=start)
    msg = str(info.value)
    assert "binance" in msg and "BTC/USDT" in msg and str(start) in msg and "gave up after 3 attempts" in msg
    assert error in msg and "\n" not in msg
    assert src.stats["BadPage"] == 3


def test_exchange_errors_fail_fast_without_retries(fx):
    src = make_source(fx)
    with pytest.raises(ConfigError, match="no market 'BTC/USDX'.*BTC/USDT"):
        src.fetch("BTC/USDX", "1h", since=fx.now_ms - 10 * HOUR_MS)
    with pytest.raises(ConfigError, match="no timeframe '7m'"):
        src.fetch("BTC/USDT", "7m", since=fx.now_ms - 10 * HOUR_MS)
    assert fx.klines_requests() == []
    # ccxt lists 1s for binance; the fake refuses it server-side (Binance -1120): one request, no retry
    with pytest.raises(DownloadError, match="refused.*BadRequest.*Invalid interval.*not retried"):
        src.fetch("BTC/USDT", "1s", since=fx.now_ms - 10_000)
    assert fx.path_counts["/api/v3/klines"] == 1 and src.delays == []
    with pytest.raises(ConfigError, match="not a ccxt exchange id; did you mean binance"):
        CcxtSource("binanse")


def test_network_faults_give_up_after_max_retries(fx):
    src = make_source(fx, max_retries=3)
    src.load_markets()
    fx.force_faults(["503"] * 10)
    with pytest.raises(DownloadError, match=r"binance BTC/USDT 1h page from .* gave up after 4 attempts.*ExchangeNotAvailable"):
        src.fetch("BTC/USDT", "1h", since=fx.now_ms - 10 * HOUR_MS)
    assert fx.path_counts["/api/v3/klines"] == 4


def test_backoff_is_capped_exponential_with_jitter():
    policy = RetryPolicy(max_retries=50, backoff_base=0.5, backoff_cap=30.0)
    rng = random.Random(0)
    delays = [policy.delay(k, rng) for k in range(50)]
    for k, d in enumerate(delays):
        envelope = min(30.0, 0.5 * 2**k)
        assert envelope / 2 <= d <= envelope  # equal jitter
    assert max(delays) <= 30.0 and delays[-1] >= 15.0
    assert len(set(delays)) == len(delays)  # jittered
    assert policy.delay(0, rng, retry_after=7) == 7  # Retry-After honoured...
    assert policy.delay(0, rng, retry_after=600) == 30.0  # ...but capped


def test_retry_after_header_is_honoured_and_capped(fx):
    slept: list[float] = []
    src = make_source(fx, sleep=slept.append, backoff_base=0.01, backoff_cap=0.8)
    fx.retry_after = 1
    src.load_markets()
    fx.force_faults(["429", "418", "502"])
    src.fetch("BTC/USDT", "1h", since=fx.now_ms - 10 * HOUR_MS)
    assert slept[:2] == [0.8, 0.8]  # Retry-After: 1 s, capped at 0.8 s
    assert slept[2] <= 0.01 * 2**2  # a 502 carries no Retry-After: plain backoff (third attempt)
    assert src.delays == slept


def test_rate_limit_is_honoured(fx):
    # a slow limit (250 ms x the endpoint's cost). The spacing is measured where ccxt's limiter lets
    # each request go (a monotonic clock read as its throttle returns), not at the server: under load
    # the network and server threads delay arrivals unevenly, which says nothing about the limiter
    src = CcxtSource("binance", base_url=fx.url, progress=False, page_limit=50, api_options={"rateLimit": 250})
    costs: list[float] = []
    released: list[float] = []
    throttle = src.exchange.throttle

    def timed_throttle(cost=None):
        costs.append(1 if cost is None else cost)
        throttle(cost)
        released.append(time.monotonic())

    src.exchange.throttle = timed_throttle
    src.load_markets()
    fx.reset_counts()
    before = len(released)
    src.fetch("BTC/USDT", "1h", since=(fx.now_ms // HOUR_MS) * HOUR_MS - 200 * HOUR_MS)
    klines = [p for p, _ in fx.arrivals if p.endswith("/klines")]
    assert len(klines) == 4 and len(released) - before >= 5  # time + 4 pages, each through ccxt's limiter
    gaps_ms = np.diff(released[before - 1:]) * 1000  # from the last markets request on
    # ccxt stamps requests in whole milliseconds: a gap may fall short of rateLimit x cost by < 2 ms
    assert (gaps_ms >= 250 * np.array(costs[before:]) - 2).all(), (gaps_ms, costs[before:])
    assert min(costs[before:]) > 0  # binance's weight of a klines page: a fraction of rateLimit


def test_exchange_without_candles_is_refused(fx):
    src = make_source(fx)
    src.exchange.has["fetchOHLCV"] = False
    with pytest.raises(ConfigError, match=r"does not offer candles \(has\['fetchOHLCV'\] is false\)"):
        src.fetch("BTC/USDT", "1h", since=fx.now_ms - 10 * HOUR_MS)


def test_secrets_never_reach_messages_or_logs(fx, caplog):
    secret = "s3cr3t-VALUE-123"
    src = make_source(fx, max_retries=1, api_options={"timeout": 600, "apiKey": "key-ABC-987", "secret": secret})
    src.load_markets()
    # a proxy that echoes the secret back in its error page: it must still not be repeated
    fx.force_faults(["503", "503"])
    caplog.set_level("DEBUG", logger="factorgym")
    with pytest.raises(DownloadError) as info:
        src.fetch("BTC/USDT", "1h", since=fx.now_ms - 10 * HOUR_MS)
    assert src._redact(f"GET /x?signature=1&k={secret}") == "GET /x?signature=1&k=***"
    text = str(info.value) + caplog.text
    assert secret not in text and "key-ABC-987" not in text
