"""backtest(): driving CryptoTradingEnv, reconciling the trade log, reports, policy adapters."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs.backtest import BacktestResult, backtest
from factorgym.envs.report import write_html_report
from factorgym.envs.config import ExecutionConfig
from factorgym.errors import ConfigError

HOUR = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC


def make_tensor(T: int = 120, A: int = 2, seed: int = 0, timeframe: str = "1h", flat: bool = False) -> FactorTensor:
    """OHLC with open != previous close, so fills at the open are distinguishable from the close."""
    rng = np.random.default_rng(seed)
    if flat:
        close = np.full((T, A), 100.0)
        opn = close.copy()
    else:
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (T, A)), axis=0))
        opn = close * np.exp(rng.normal(0, 0.003, (T, A)))
    high = np.maximum(opn, close) * 1.001
    low = np.minimum(opn, close) * 0.999
    vol = np.full((T, A), 1e9)
    prices = np.stack([opn, high, low, close, vol], axis=-1)
    step = {"1h": HOUR, "1d": 24 * HOUR}[timeframe]
    return FactorTensor.from_arrays(rng.normal(size=(T, A, 3)), prices, T0 + np.arange(T) * step,
                                    symbols=[f"C{i}/USDT" for i in range(A)], meta={"timeframe": timeframe})


def const(w):
    w = np.asarray(w, dtype=float)
    return lambda obs: w.copy()


def random_policy(A: int, seed: int):
    rng = np.random.default_rng(seed)
    return lambda obs: rng.dirichlet(np.ones(A + 1))[:A]


FEES = ExecutionConfig(taker_fee=0.001, maker_fee=0.001, slippage_bps=0.0, half_spread_bps=0.0, impact_coef=0.0,
                       lot_step=0.0, min_amount=0.0, min_notional=0.0, price_step=0.0, use_market_rules=False)


def test_single_asset_full_weight_equals_price_ratio():
    # weight 1 on one asset, zero costs: bought at open[1], worth close[t] / open[1] of the cash after
    tensor = make_tensor(A=1)
    res = backtest(tensor, const([1.0]), mapping="direct", execution=ExecutionConfig.frictionless())
    p = tensor.prices
    expect = 10_000 * p[1:, 0, 3] / p[1, 0, 0]
    np.testing.assert_allclose(res.equity[1:], expect, rtol=1e-9)
    assert res.equity[0] == 10_000
    assert res.metrics["total_return"] == pytest.approx(p[-1, 0, 3] / p[1, 0, 0] - 1, rel=1e-9)


def test_rows_timestamps_and_fill_timing():
    tensor = make_tensor()
    res = backtest(tensor, const([0.5, 0.5]), mapping="direct", execution=FEES)
    assert isinstance(res, BacktestResult)
    np.testing.assert_array_equal(res.timestamps, tensor.timestamps)
    assert res.equity.shape == (tensor.n_bars,) and res.weights.shape == (tensor.n_bars, 2)
    first = res.trades.iloc[0]
    # the decision at the close of bar 0 fills at the open of bar 1, at that open (no slippage)
    assert first["time"] == pd.Timestamp(T0 + HOUR, unit="ms", tz="UTC")
    assert first["price"] == pytest.approx(tensor.prices[1, 0, 0])
    assert list(res.trades.columns[:6]) == ["time", "symbol", "side", "quantity", "price", "fee"]


def test_trade_log_reconciles_with_positions_cash_and_equity():
    tensor = make_tensor(A=3, seed=4)
    res = backtest(tensor, random_policy(3, 1), mapping="direct", execution=FEES)
    tr = res.trades
    assert len(tr) > 50 and (tr["quantity"] > 0).all()
    signed = np.where(tr["side"] == "buy", 1.0, -1.0) * tr["quantity"]
    ts = tr["time"].dt.as_unit("ms").astype("int64").to_numpy()
    row = np.searchsorted(res.timestamps, ts)
    # positions == cumulative signed trade quantities, per symbol, at every bar
    for i, sym in enumerate(res.symbols):
        m = (tr["symbol"] == sym).to_numpy()
        per_bar = np.bincount(row[m], weights=signed[m].to_numpy(), minlength=len(res.timestamps))
        np.testing.assert_allclose(res.positions[:, i], np.cumsum(per_bar), rtol=1e-9, atol=1e-9)
    # fees: the log's fees are the per-bar fees and the metric
    fee_bar = np.bincount(row, weights=tr["fee"].to_numpy(), minlength=len(res.timestamps))
    np.testing.assert_allclose(res.fees, fee_bar, rtol=1e-12, atol=1e-12)
    assert res.metrics["fees"] == pytest.approx(tr["fee"].sum(), rel=1e-12)
    # cash: initial - buys + sells - fees
    flow = -(signed * tr["price"]).to_numpy() - tr["fee"].to_numpy()
    cash = 10_000 + np.cumsum(np.bincount(row, weights=flow, minlength=len(res.timestamps)))
    np.testing.assert_allclose(res.cash, cash, rtol=1e-9)
    # equity = cash + positions marked at the close; weights = value / equity
    value = res.positions * tensor.prices[:, :, 3]
    np.testing.assert_allclose(res.equity, res.cash + value.sum(axis=1), rtol=1e-9)
    np.testing.assert_allclose(res.weights, value / res.equity[:, None], rtol=1e-9, atol=1e-12)


def test_fees_are_the_equity_lost_on_flat_prices():
    # with constant prices trading has no PnL: the equity lost against a zero-fee run is the fees
    tensor = make_tensor(A=2, flat=True)
    free = backtest(tensor, random_policy(2, 7), mapping="direct", execution=ExecutionConfig.frictionless())
    paid = backtest(tensor, random_policy(2, 7), mapping="direct", execution=FEES)
    assert np.allclose(free.equity, 10_000)
    assert paid.metrics["fees"] > 1.0
    assert free.equity[-1] - paid.equity[-1] == pytest.approx(paid.metrics["fees"], rel=1e-9)
    np.testing.assert_allclose(10_000 - paid.equity, np.cumsum(paid.fees), rtol=1e-9, atol=1e-9)


def test_deterministic_same_bits():
    tensor = make_tensor(A=3)
    a = backtest(tensor, random_policy(3, 5), mapping="direct")
    b = backtest(tensor, random_policy(3, 5), mapping="direct")
    assert a.equity.tobytes() == b.equity.tobytes() and a.positions.tobytes() == b.positions.tobytes()
    pd.testing.assert_frame_equal(a.trades, b.trades)
    c = backtest(tensor, random_policy(3, 6), mapping="direct")
    assert a.equity.tobytes() != c.equity.tobytes()


def test_future_prices_do_not_change_the_past():
    tensor = make_tensor(A=2, seed=9)
    k = 60
    prices = np.array(tensor.prices)
    prices[k + 1:, :, :4] *= 1.5
    changed = FactorTensor(tensor.features, prices, tensor.timestamps, tensor.symbols, tensor.feature_names,
                           tensor.tradable, tensor.meta)
    a = backtest(tensor, const([0.3, 0.6]), mapping="direct")
    b = backtest(changed, const([0.3, 0.6]), mapping="direct")
    np.testing.assert_array_equal(a.equity[:k + 1], b.equity[:k + 1])
    assert a.equity[k + 1] != b.equity[k + 1]


def test_start_end_by_index_time_and_pre_sliced_split():
    tensor = make_tensor(T=100)
    ts = tensor.timestamps
    by_index = backtest(tensor, const([0.5, 0.2]), mapping="direct", start=20, end=70)
    by_time = backtest(tensor, const([0.5, 0.2]), mapping="direct", start=pd.Timestamp(ts[20], unit="ms", tz="UTC"),
                       end=int(ts[70]))
    split = backtest(tensor.slice_time(int(ts[20]), int(ts[70])), const([0.5, 0.2]), mapping="direct")
    assert len(by_index.equity) == 50 and by_index.timestamps[0] == ts[20] and by_index.timestamps[-1] == ts[69]
    for other in (by_time, split):
        np.testing.assert_array_equal(by_index.equity, other.equity)
        np.testing.assert_array_equal(by_index.timestamps, other.timestamps)
    neg = backtest(tensor, const([0.5, 0.2]), mapping="direct", start=20, end=-30)
    np.testing.assert_array_equal(neg.equity, by_index.equity)


def test_window_uses_bars_before_start_for_observations_only():
    tensor = make_tensor(T=80)
    seen = []

    def policy(obs):
        seen.append(obs.copy())
        return np.array([0.5, 0.5])

    res = backtest(tensor, policy, mapping="direct", window=5, start=30)
    assert res.timestamps[0] == tensor.timestamps[30] and len(res.equity) == 50
    # first observation = features of bars 26..30
    np.testing.assert_allclose(seen[0][: 5 * 2 * 3], np.asarray(tensor.features[26:31]).reshape(-1))
    with pytest.raises(ConfigError, match="window"):
        backtest(tensor, policy, mapping="direct", window=5, start=2)
    early = backtest(tensor, policy, mapping="direct", window=5, start="2023-01-01")  # a time before the data
    assert early.timestamps[0] == tensor.timestamps[4]


def test_sb3_like_predict_object():
    class FakeModel:
        def __init__(self):
            self.flags = []

        def predict(self, obs, state=None, episode_start=None, deterministic=False):
            self.flags.append(deterministic)
            return np.array([0.25, 0.5], dtype=np.float32), state

    tensor = make_tensor()
    model = FakeModel()
    res = backtest(tensor, model, mapping="direct")
    ref = backtest(tensor, const(np.array([0.25, 0.5], dtype=np.float32)), mapping="direct")
    assert all(model.flags) and len(model.flags) == tensor.n_bars - 1
    np.testing.assert_array_equal(res.equity, ref.equity)


def test_default_mapping_is_the_envs_simplex():
    tensor = make_tensor()
    res = backtest(tensor, lambda obs: np.array([1.0, -1.0, -1.0]))  # simplex: all in asset 0
    assert res.weights[1:, 1].max() == 0 and res.weights[1:, 0].min() > 0.9


def test_annualisation_hourly_vs_daily():
    h = backtest(make_tensor(timeframe="1h"), const([0.5, 0.5]), mapping="direct", execution=FEES)
    d = backtest(make_tensor(timeframe="1d"), const([0.5, 0.5]), mapping="direct", execution=FEES)
    np.testing.assert_allclose(h.equity, d.equity)  # same prices, same trades
    assert h.info["bars_per_year"] == 8760 and d.info["bars_per_year"] == 365
    assert h.metrics["sharpe"] / d.metrics["sharpe"] == pytest.approx(math.sqrt(24))
    assert d.metrics["years"] / h.metrics["years"] == pytest.approx(24)
    assert h.metrics["turnover"] / d.metrics["turnover"] == pytest.approx(24)


def test_metrics_against_values_computed_from_the_arrays_with_pandas():
    res = backtest(make_tensor(), random_policy(2, 3), mapping="direct", execution=FEES)
    m, eq = res.metrics, pd.Series(res.equity)
    r = eq.pct_change().dropna()
    years = (res.timestamps[-1] - res.timestamps[0]) / (365 * 86_400_000)
    gross = np.abs(res.weights).sum(axis=1)
    want = {
        "total_return": eq.iloc[-1] / eq.iloc[0] - 1,
        "cagr": (eq.iloc[-1] / eq.iloc[0]) ** (1 / years) - 1,
        "ann_volatility": r.std() * math.sqrt(8760),
        "sharpe": r.mean() / r.std() * math.sqrt(8760),
        "sortino": r.mean() / math.sqrt((r.clip(upper=0) ** 2).mean()) * math.sqrt(8760),
        "max_drawdown": (1 - eq / eq.cummax()).max(),
        "turnover": res.turnover[1:].mean() * 8760,
        "total_turnover": res.turnover.sum(),
        "fees": res.trades["fee"].sum(),  # the per-bar fees add up to the trade log's
        "exposure": gross[1:].mean(),
        "hit_rate": (r[gross[1:] > 0] > 0).mean(),
        "n_trades": len(res.trades),
        "final_equity": eq.iloc[-1],
        "years": years,
    }
    want["calmar"] = want["cagr"] / want["max_drawdown"]
    want["fees_frac"] = want["fees"] / 10_000
    for key, value in want.items():
        assert m[key] == pytest.approx(value, rel=1e-9), key
    assert m["n_bars"] == len(res.equity) - 1 and m["ruined"] == 0.0 and m["initial_equity"] == 10_000


def test_frame_summary_plot_and_html_report(tmp_path):
    res = backtest(make_tensor(), random_policy(2, 3), mapping="direct", name="rnd")
    df = res.to_frame()
    assert list(df.columns[:3]) == ["equity", "cash", "fees"] and "w:C0/USDT" in df and "pos:C1/USDT" in df
    assert str(df.index.tz) == "UTC" and len(df) == len(res.equity)
    assert "Sharpe" in res.summary() and "rnd" in res.summary()
    png = tmp_path / "plot.png"
    res.plot(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = res.report_html(tmp_path / "r" / "report.html").read_text()
    assert "data:image/png;base64," in html and "Sharpe" in html and "rnd" in html
    from factorgym.envs.backtest import format_metric

    assert format_metric("sharpe", res.metrics["sharpe"]) in html
    assert "C1/USDT" in html and "<table" in html
    both = write_html_report(tmp_path / "both.html", {"a": res, "b": res}).read_text()
    assert both.count("data:image/png;base64,") == 3  # the comparison, then one per run


def test_liquidation_ends_the_run_early(caplog):
    tensor = make_tensor(A=1, T=60, flat=True)
    prices = np.array(tensor.prices)
    prices[30:, 0, :4] *= 1.6  # a short of 3x equity loses everything and more at bar 30
    spiked = FactorTensor(tensor.features, prices, tensor.timestamps, tensor.symbols, tensor.feature_names,
                          tensor.tradable, tensor.meta)
    ex = ExecutionConfig.frictionless(max_leverage=3.0)
    res = backtest(spiked, const([-3.0]), mapping="direct", execution=ex, env_kwargs={"long_only": False})
    # the arrays stop at the bar the env terminated on; the env's equity there is below zero
    assert res.info["status"] == "bankrupt" and len(res.equity) == 31 and res.equity[-1] < 0
    assert res.timestamps[-1] == tensor.timestamps[30]
    assert res.metrics["max_drawdown"] == 1.0 and res.metrics["total_return"] == -1.0  # metrics floor at ruin
    assert res.metrics["ruined"] == 1.0 and res.metrics["final_equity"] == 0.0
    assert "ended" in caplog.text


def test_trade_log_accepts_plain_dicts_and_empty():
    from factorgym.envs.backtest import TRADE_COLUMNS, _TradeLog

    log = _TradeLog(["A/USDT"])
    assert list(log.frame().columns) == TRADE_COLUMNS and len(log.frame()) == 0
    log.add(3_600_000, [{"timestamp": 3_600_000, "symbol": "A/USDT", "side": "sell", "quantity": 2.0, "price": 10.0,
                         "fee": 0.02, "slippage_cost": 0.0, "kind": "order"}])
    df = log.frame()
    assert df.loc[0, "time"] == pd.Timestamp(3_600_000, unit="ms", tz="UTC")
    assert (df.loc[0, "side"], df.loc[0, "quantity"], df.loc[0, "fee"]) == ("sell", 2.0, 0.02)


def test_bad_inputs():
    tensor = make_tensor(T=30)
    with pytest.raises(ConfigError, match="policy"):
        backtest(tensor, 42)
    with pytest.raises(ConfigError, match="at least 2"):
        backtest(tensor, const([0, 0]), mapping="direct", start=10, end=11)
    with pytest.raises(ConfigError, match="outside"):
        backtest(tensor, const([0, 0]), mapping="direct", start=31)
    with pytest.raises(ConfigError, match="not understood"):
        backtest(tensor, const([0, 0]), mapping="direct", start="yesterday-ish")
