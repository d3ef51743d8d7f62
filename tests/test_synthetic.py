"""SyntheticSource: determinism, layout, OHLC consistency, correlation, regimes, listing, protocol."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from factorgym.data_layer.candles import CANDLE_COLUMNS
from factorgym.data_layer.sources.base import OHLCVSource, default_rules
from factorgym.data_layer.sources.synthetic import MarketParams, SyntheticSource, synthetic_candles
from factorgym.data_layer.store import CandleStore
from factorgym.errors import ConfigError

H = 3_600_000
T0 = 1_640_995_200_000  # 2022-01-01 UTC


def log_returns(frames: dict[str, pd.DataFrame]) -> np.ndarray:
    return np.column_stack([np.diff(np.log(f["close"].to_numpy())) for f in frames.values()])


def offdiag(c: np.ndarray) -> np.ndarray:
    return c[np.triu_indices(len(c), 1)]


@pytest.fixture(scope="module")
def big() -> dict[str, pd.DataFrame]:
    return synthetic_candles(8, n_bars=20_000, seed=7)


def test_same_seed_same_bits_other_seed_differs():
    a = synthetic_candles(["BTC/USDT", "ETH/USDT"], n_bars=500, seed=3)
    b = synthetic_candles(["BTC/USDT", "ETH/USDT"], n_bars=500, seed=3)
    c = synthetic_candles(["BTC/USDT", "ETH/USDT"], n_bars=500, seed=4)
    for s in a:
        assert a[s].to_numpy().tobytes() == b[s].to_numpy().tobytes()
        assert not np.array_equal(a[s]["close"], c[s]["close"])


def test_adding_a_symbol_keeps_the_others_paths():
    two = synthetic_candles(["BTC/USDT", "ETH/USDT"], n_bars=300, seed=1)
    three = synthetic_candles(["BTC/USDT", "ETH/USDT", "SOL/USDT"], n_bars=300, seed=1)
    for s in two:
        pd.testing.assert_frame_equal(two[s], three[s])


def test_layout_grid_and_dtypes():
    src = SyntheticSource(["BTC/USDT", "ETH/USDT"], timeframe="4h", start="2023-03-01", n_bars=250, seed=0)
    frame = src.fetch("ETH/USDT", "4h")
    assert list(frame.columns) == CANDLE_COLUMNS and len(frame) == 250
    assert frame["timestamp"].dtype == np.int64
    assert all(frame[c].dtype == np.float64 for c in CANDLE_COLUMNS[1:])
    assert frame["timestamp"].iloc[0] == 1_677_628_800_000  # 2023-03-01 00:00 UTC
    assert (np.diff(frame["timestamp"]) == 4 * H).all()
    part = src.fetch("ETH/USDT", "4h", since=frame["timestamp"].iloc[10], until=frame["timestamp"].iloc[20])
    pd.testing.assert_frame_equal(part, frame.iloc[10:20].reset_index(drop=True))
    assert src.symbols() == ["BTC/USDT", "ETH/USDT"]
    assert len(synthetic_candles(3, n_bars=5)) == 3


def test_ohlc_consistency_and_continuity(big):
    for frame in big.values():
        o, h, l, c, v = (frame[k].to_numpy() for k in CANDLE_COLUMNS[1:])
        assert np.isfinite(frame.to_numpy()).all()
        assert (l > 0).all() and (v >= 0).all()
        assert (l <= np.minimum(o, c)).all() and (h >= np.maximum(o, c)).all()
        assert (h > l).mean() > 0.99  # real wicks, not flat bars
        np.testing.assert_array_equal(o[1:], c[:-1])  # 24/7 market: no overnight gap


def test_correlation_matches_requested_one():
    rho = 0.6
    frames = synthetic_candles(6, n_bars=20_000, seed=2, params=MarketParams(correlation=rho, jump_intensity=0.0))
    corr = offdiag(np.corrcoef(log_returns(frames).T))
    assert np.abs(corr - rho).max() < 0.03
    # idiosyncratic jumps dilute it by the jump share of variance: rho / (1 + intensity * scale^2)
    p = MarketParams(correlation=rho)
    frames = synthetic_candles(6, n_bars=20_000, seed=2, params=p)
    expected = rho / (1 + p.jump_intensity * p.jump_scale**2)
    assert abs(offdiag(np.corrcoef(log_returns(frames).T)).mean() - expected) < 0.03


def test_full_correlation_matrix():
    c = np.array([[1.0, 0.8, -0.3], [0.8, 1.0, 0.0], [-0.3, 0.0, 1.0]])
    frames = synthetic_candles(["A/U", "B/U", "C/U"], n_bars=20_000, seed=5, correlation=c,
                               params=MarketParams(jump_intensity=0.0))
    got = np.corrcoef(log_returns(frames).T)
    assert np.abs(got - c).max() < 0.04
    with pytest.raises(ConfigError, match="positive definite"):
        SyntheticSource(["A/U", "B/U"], correlation=[[1.0, 1.5], [1.5, 1.0]])
    with pytest.raises(ConfigError, match="symmetric"):
        SyntheticSource(["A/U", "B/U"], correlation=np.eye(3))


def test_volatility_clustering_and_volume_follows_moves(big):
    r = log_returns(big)
    a = np.abs(r)
    acf1 = np.array([np.corrcoef(a[1:, j], a[:-1, j])[0, 1] for j in range(r.shape[1])])
    acf_raw = np.array([np.corrcoef(r[1:, j], r[:-1, j])[0, 1] for j in range(r.shape[1])])
    assert (acf1 > 0.1).all()  # |returns| cluster ...
    assert (np.abs(acf_raw) < 0.05).all()  # ... while returns themselves are not predictable
    shuffled = np.random.default_rng(0).permutation(a[:, 0])
    assert abs(np.corrcoef(shuffled[1:], shuffled[:-1])[0, 1]) < 0.05
    kurt = ((r - r.mean(0)) ** 4).mean(0) / r.var(0) ** 2
    assert (kurt > 4).all()  # fat tails from regimes and jumps
    vol = np.column_stack([f["volume"].to_numpy()[1:] for f in big.values()])
    assert all(np.corrcoef(a[:, j], vol[:, j])[0, 1] > 0.3 for j in range(r.shape[1]))


def test_listing_dates_respected():
    listing = {"SOL/USDT": "2022-01-03", "ETH/USDT": T0 + 10 * H + 1}
    src = SyntheticSource(["BTC/USDT", "ETH/USDT", "SOL/USDT"], n_bars=200, seed=0, listing=listing)
    assert src.fetch("BTC/USDT", "1h")["timestamp"].iloc[0] == T0
    sol = src.fetch("SOL/USDT", "1h")
    assert sol["timestamp"].iloc[0] == T0 + 48 * H and len(sol) == 152
    eth = src.fetch("ETH/USDT", "1h")
    assert eth["timestamp"].iloc[0] == T0 + 11 * H  # first bar opening at or after the listing time
    with pytest.raises(ConfigError, match="DOGE"):
        SyntheticSource(["BTC/USDT"], listing={"DOGE/USDT": "2022-01-01"})


def test_protocol_rules_and_errors():
    src = SyntheticSource(["BTC/USDT"], n_bars=10)
    assert isinstance(src, OHLCVSource) and src.name == "synthetic"
    assert src.market_rules("BTC/USDT") == default_rules("BTC/USDT")
    with pytest.raises(ConfigError, match="ETH/USDT"):
        src.fetch("ETH/USDT", "1h")
    with pytest.raises(ConfigError, match="timeframe"):
        src.fetch("BTC/USDT", "1d")
    with pytest.raises(ConfigError, match="correlation"):
        MarketParams(correlation=1.0)
    with pytest.raises(ConfigError, match="seed"):
        SyntheticSource(["BTC/USDT"], seed=-1)
    with pytest.raises(ConfigError, match="unique"):
        SyntheticSource(["BTC/USDT", "BTC/USDT"])
    with pytest.raises(ConfigError, match="n_bars"):
        SyntheticSource(["BTC/USDT"], n_bars=0)


def test_store_round_trip(tmp_path):
    src = SyntheticSource(["BTC/USDT", "ETH/USDT:USDT"], n_bars=1000, seed=11)
    store = CandleStore(tmp_path)
    for s in src.symbols():
        store.write(src.name, s, "1h", src.fetch(s, "1h"))
        store.write_rules(src.name, src.market_rules(s))
    for s in src.symbols():
        pd.testing.assert_frame_equal(store.read("synthetic", s, "1h"), src.fetch(s, "1h"))
        assert store.read_rules("synthetic", s) == default_rules(s)
    assert [e.n_gaps for e in store.entries()] == [0, 0]
