"""envs/backtest.py against its docstrings: the defaults of ``backtest()``, how ``start``/``end``
are read (bar index, negative index, time, epoch ms) with their boundaries and exact error
messages, the result's arrays (shapes, dtypes, row 0), ``info``, the trade frame, ``to_frame``,
``drawdown``, ``summary`` and the display formats."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest

from factorgym.data_layer.tensor import FactorTensor
from factorgym.envs import ExecutionConfig
import importlib

from factorgym.envs.backtest import BacktestResult, backtest, format_metric, span_note
from factorgym.envs.trades import Trades
from factorgym.errors import ConfigError

B = importlib.import_module("factorgym.envs.backtest")  # (factorgym.envs.backtest is also the function)

pytestmark = pytest.mark.filterwarnings("error")  # no numpy or Gymnasium warning may escape

HOUR = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
FEES = ExecutionConfig(taker_fee=0.001, use_market_rules=False)


def tensor(T: int = 30, timeframe: str = "1h", step: int = HOUR) -> FactorTensor:
    """Two assets, open != previous close (fills at the open are told apart from the close)."""
    rng = np.random.default_rng(5)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (T, 2)), axis=0)) * np.array([1.0, 0.2])
    opn = close * np.exp(rng.normal(0, 0.003, (T, 2)))
    prices = np.stack([opn, np.maximum(opn, close), np.minimum(opn, close), close, np.full((T, 2), 1e6)], -1)
    return FactorTensor.from_arrays(rng.normal(size=(T, 2, 2)), prices, T0 + np.arange(T) * step,
                                    symbols=["X/USDT", "Y/USDT"], meta={"timeframe": timeframe})


def const(*w):
    return lambda obs: np.array(w, dtype=np.float64)


@pytest.fixture(scope="module")
def run():
    """One traded run (30 bars, window 3, from bar 5 to bar 25)."""
    return backtest(tensor(), const(0.4, -0.3), start=5, end=25, window=3, mapping="direct", execution=FEES,
                    env_kwargs={"long_only": False}, name="ls")


# ------------------------------------------------------------------ defaults
def test_the_defaults_run_the_envs_defaults_from_the_first_full_window_to_the_last_bar():
    """start: window - 1; end: the last bar; initial_cash 10_000; seed 0; name 'policy'; window 1;
    mapping/execution: the env's (simplex, ExecutionConfig())."""
    t = tensor()
    res = backtest(t, const(0.5, 0.3, 0.2))
    assert len(res.equity) == 30 and res.timestamps[0] == T0 and res.timestamps[-1] == t.timestamps[-1]
    assert res.equity[0] == 10_000.0 and res.name == "policy"
    assert res.info == {"start_bar": 0, "end_bar": 30, "window": 1, "seed": 0, "bars_per_year": 8760.0, "status": "ok"}
    explicit = backtest(t, const(0.5, 0.3, 0.2), window=1, mapping="simplex", execution=ExecutionConfig(),
                        initial_cash=10_000.0)
    np.testing.assert_array_equal(res.equity, explicit.equity)
    frictionless = backtest(t, const(0.5, 0.3, 0.2), execution=ExecutionConfig.frictionless())
    assert frictionless.equity[-1] != res.equity[-1]  # the default execution has costs


def test_the_backtest_window_and_episode_length_win_over_env_kwargs():
    """backtest's own window and the whole range (episode_length None) override env_kwargs."""
    t = tensor()
    res = backtest(t, const(0.5, 0.5), window=3, mapping="direct",
                   env_kwargs={"episode_length": 4, "window": 7, "initial_cash": 5.0})
    assert len(res.equity) == 28 and res.info["window"] == 3 and res.equity[0] == 10_000.0


@pytest.mark.parametrize("cash", [500, 2_000.5])
def test_the_initial_cash_is_row_0_and_the_metrics_initial_equity(cash):
    res = backtest(tensor(T=8), const(0.5, 0.5), mapping="direct", initial_cash=cash)
    assert res.equity[0] == res.cash[0] == float(cash) and res.metrics["initial_equity"] == float(cash)


# ------------------------------------------------------------------ start / end
@pytest.mark.parametrize("start, end, lo, hi", [
    (None, None, 2, 30), (2, 30, 2, 30), (-28, -1, 2, 29), (10, 12, 10, 12), (28, None, 28, 30),
    (np.int64(4), np.int32(9), 4, 9),
])
def test_start_and_end_as_bar_indices(start, end, lo, hi):
    """Indices: negative counts from the end, end exclusive; both ends of [window - 1, T] accepted."""
    res = backtest(tensor(), const(0.2, 0.2), start=start, end=end, window=3, mapping="direct")
    assert (res.info["start_bar"], res.info["end_bar"]) == (lo, hi) and len(res.equity) == hi - lo
    np.testing.assert_array_equal(res.timestamps, T0 + np.arange(lo, hi) * HOUR)


@pytest.mark.parametrize("start, end, lo, hi", [
    (T0 + 10 * HOUR, T0 + 20 * HOUR, 10, 20),  # epoch ms: the bar at it; end: the bars before it
    (T0 + 10 * HOUR + 1, T0 + 20 * HOUR + 1, 11, 21),  # between bars: the first bar at/after it
    ("2024-01-01 05:00", "2024-01-01T07:00Z", 5, 7), (pd.Timestamp(T0 + 3 * HOUR, unit="ms", tz="UTC"), None, 3, 30),
    ("2023-06-01", "2030-01-01", 2, 30),  # before the data: its first full window; after it: the end
    ("2024-01-01 01:00", None, 2, 30),  # a time inside the first window is floored to window - 1 too
    (T0 + HOUR, None, 2, 30), (T0 - 5 * HOUR, None, 2, 30),  # ... also as epoch ms (was refused: bar 1 / 0)
])
def test_start_and_end_as_times(start, end, lo, hi):
    res = backtest(tensor(), const(0.2, 0.2), start=start, end=end, window=3, mapping="direct")
    assert (res.info["start_bar"], res.info["end_bar"]) == (lo, hi)


@pytest.mark.parametrize("kw, message", [
    ({"start": 31}, "start=31 is outside the tensor's 30 bars"),
    ({"start": -31}, "start=-31 is outside the tensor's 30 bars"),
    ({"end": 31}, "end=31 is outside the tensor's 30 bars"),
    ({"end": -31}, "end=-31 is outside the tensor's 30 bars"),
    ({"start": 99_999_999_999}, "start=99999999999 is outside the tensor's 30 bars"),  # below 1e11: an index
    ({"start": 1}, "start bar 1 leaves no room for the observation window of 3 bars: use start >= 2"),
    ({"start": -30}, "start bar 0 leaves no room for the observation window of 3 bars: use start >= 2"),
    ({"start": 29}, r"the backtest range has 1 bars \(start bar 29, end bar 30\); it needs at least 2"),
    ({"start": 30}, r"the backtest range has 0 bars \(start bar 30, end bar 30\); it needs at least 2"),
    ({"start": 10, "end": 4}, r"the backtest range has 0 bars \(start bar 10, end bar 4\); it needs at least 2"),
    ({"window": 0}, "window must be >= 1, got 0"),
    ({"window": -2}, "window must be >= 1, got -2"),
])
def test_a_range_that_cannot_run_is_refused_with_its_numbers(kw, message):
    kw = {"window": 3, **kw}
    with pytest.raises(ConfigError, match=rf"^{message}$"):
        backtest(tensor(), const(0.2, 0.2), mapping="direct", **kw)


def test_the_shortest_range_is_two_bars():
    res = backtest(tensor(), const(0.2, 0.2), start=28, window=3, mapping="direct")
    assert len(res.equity) == 2 and res.metrics["n_bars"] == 1.0


# ------------------------------------------------------------------ policies
def test_a_policy_that_is_neither_callable_nor_a_model_is_refused():
    for bad, name in ((42, "int"), ("buy", "str"), (None, "NoneType")):
        with pytest.raises(ConfigError, match=rf"^policy must be a callable obs -> action or have "
                                              rf"\.predict\(obs, deterministic=True\); got {name}$"):
            backtest(tensor(), bad, mapping="direct")


def test_a_callable_policy_with_reset_is_reset_once_before_its_first_action_and_a_model_never():
    calls = []

    class Stateful:
        def reset(self):
            calls.append("reset")

        def __call__(self, obs):
            calls.append("act")
            return np.array([0.1, 0.1])

    backtest(tensor(T=6), Stateful(), mapping="direct")
    assert calls == ["reset"] + ["act"] * 5

    class Model:  # .predict wins, and a model's reset (if any) is not the policy's
        def reset(self):
            raise AssertionError("a model is not reset")

        def predict(self, obs, deterministic=False):
            assert deterministic is True
            return np.array([0.1, 0.1]), None

    backtest(tensor(T=6), Model(), mapping="direct")

    class CallableModel(Model):  # callable too: .predict still wins
        def __call__(self, obs):
            raise AssertionError("a model acts through predict")

    res = backtest(tensor(T=6), CallableModel(), mapping="direct")
    assert res.weights[-1] == pytest.approx([0.1, 0.1], abs=0.01)


def test_the_policy_sees_each_observation_of_the_env_once_in_order():
    """The policy gets the env's own observations: those of a CryptoTradingEnv stepped by hand."""
    from factorgym.envs import CryptoTradingEnv

    seen = []

    def policy(obs):
        seen.append(obs.copy())
        return np.array([0.3, -0.1])

    t = tensor(T=10)
    backtest(t, policy, window=2, start=3, mapping="direct", env_kwargs={"long_only": False}, execution=FEES)
    env = CryptoTradingEnv(t, window=2, mapping="direct", long_only=False, execution=FEES, random_start=False)
    obs, _ = env.reset(options={"start": 3})
    for got in seen:
        np.testing.assert_array_equal(got, obs)
        obs, *_ = env.step(np.array([0.3, -0.1]))
    assert len(seen) == 6


# ------------------------------------------------------------------ the result
def test_the_result_arrays_have_one_row_per_bar_with_the_documented_dtypes(run):
    n, A = 20, 2
    assert run.timestamps.dtype == np.int64 and run.timestamps.shape == (n,)
    for name in ("equity", "cash", "fees", "turnover", "rewards"):
        a = getattr(run, name)
        assert a.dtype == np.float64 and a.shape == (n,), name
    for name in ("weights", "positions"):
        a = getattr(run, name)
        assert a.dtype == np.float64 and a.shape == (n, A), name
    assert run.symbols == ["X/USDT", "Y/USDT"] and run.timeframe == "1h" and run.name == "ls"
    assert run.info == {"start_bar": 5, "end_bar": 25, "window": 3, "seed": 0, "bars_per_year": 8760.0, "status": "ok"}


def test_row_0_is_the_starting_state_and_the_rows_after_it_are_the_envs_steps(run):
    """Row 0: all cash, nothing held, no fee/turnover/reward. Rows 1..: the infos and rewards of a
    CryptoTradingEnv stepped by hand with the same actions."""
    from factorgym.envs import CryptoTradingEnv

    assert run.equity[0] == run.cash[0] == 10_000.0
    assert not run.weights[0].any() and not run.positions[0].any()
    assert run.fees[0] == run.turnover[0] == run.rewards[0] == 0.0
    env = CryptoTradingEnv(tensor(), window=3, mapping="direct", long_only=False, execution=FEES, random_start=False)
    env.reset(options={"start": 5})
    for k in range(1, 20):
        _, reward, _, _, info = env.step(np.array([0.4, -0.3]))
        assert info["timestamp"] == run.timestamps[k]
        assert (run.equity[k], run.cash[k], run.fees[k], run.turnover[k], run.rewards[k]) == \
               (info["equity"], info["cash"], info["fees"], info["turnover"], reward), k
        assert list(run.weights[k]) == list(info["weights"]) and list(run.positions[k]) == list(info["positions"])


def test_the_metrics_are_those_of_the_arrays_at_the_tensors_timeframe():
    """compute_metrics of the recorded arrays, with bars_per_year from the tensor's timeframe (4h:
    2190), the bar open times, gross exposure sum |w| and the trade count."""
    from factorgym.envs.metrics import compute_metrics

    res = backtest(tensor(timeframe="4h", step=4 * HOUR), const(0.4, -0.3), window=3, mapping="direct",
                   execution=FEES, env_kwargs={"long_only": False})
    assert res.info["bars_per_year"] == 2190.0
    want = compute_metrics(res.equity, bars_per_year=2190.0, timestamps=res.timestamps, turnover=res.turnover,
                           fees=res.fees, gross_exposure=np.abs(res.weights).sum(axis=1), n_trades=len(res.trades))
    assert res.metrics.keys() == want.keys()
    for k, v in want.items():
        assert res.metrics[k] == v or (math.isnan(v) and math.isnan(res.metrics[k])), k
    assert res.metrics["years"] == pytest.approx(27 * 4 / 8760, rel=1e-15)  # bars 2..29


def test_the_trades_frame_columns_dtypes_and_values(run):
    df = run.trades
    assert list(df.columns) == B.TRADE_COLUMNS == ["time", "symbol", "side", "quantity", "price", "fee",
                                                   "slippage_cost", "kind"]
    assert str(df["time"].dt.tz) == "UTC" and df["time"].is_monotonic_increasing
    assert set(df["symbol"]) <= {"X/USDT", "Y/USDT"} and set(df["side"]) == {"buy", "sell"}
    assert set(df["kind"]) == {"order"} and (df["quantity"] > 0).all() and (df["price"] > 0).all()
    assert df.index.tolist() == list(range(len(df)))
    # the fee of each fill is the taker fee of its notional; fills at the opens of the run's bars
    np.testing.assert_allclose(df["fee"], 0.001 * df["quantity"] * df["price"], rtol=1e-12)
    assert set(df["time"]) <= set(pd.to_datetime(run.timestamps[1:], unit="ms", utc=True))
    # first fills: buy X, sell Y at the open of bar 6 (the first bar after the start)
    first = df[df["time"] == pd.Timestamp(T0 + 6 * HOUR, unit="ms", tz="UTC")]
    assert sorted(zip(first["symbol"], first["side"])) == [("X/USDT", "buy"), ("Y/USDT", "sell")]


def test_the_trade_log_merges_dicts_and_fill_arrays_in_time_order_with_the_envs_kind_names():
    log = B._TradeLog(["A", "B"])
    block = np.zeros((6, 4))  # [3A, FILL]: quantity, price, fee, slippage_cost
    block[0] = [-2.0, 10.0, 0.02, 0.01]  # an order sell of A
    block[5] = [3.0, 20.0, 0.06, 0.0]  # a liquidation buy of B
    log.add(3 * HOUR, Trades(block, 2, 3 * HOUR, ["A", "B"]))
    log.add(2 * HOUR, [{"timestamp": 2 * HOUR, "symbol": "B", "side": "buy", "quantity": 1, "price": 5,
                        "fee": 0, "slippage_cost": 0, "kind": "order"}])
    log.add(4 * HOUR, [])
    log.add(4 * HOUR, None)
    df = log.frame()
    assert df["symbol"].tolist() == ["B", "A", "B"] and df["side"].tolist() == ["buy", "sell", "buy"]
    assert df["kind"].tolist() == ["order", "order", "liquidation"]
    assert df["quantity"].tolist() == [1.0, 2.0, 3.0] and df["price"].tolist() == [5.0, 10.0, 20.0]
    assert df["time"].tolist() == [pd.Timestamp(k * HOUR, unit="ms", tz="UTC") for k in (2, 3, 3)]
    for col in ("quantity", "price", "fee", "slippage_cost"):
        assert df[col].dtype == np.float64, col


# ------------------------------------------------------------------ derived views
def result(equity, A: int = 1, metrics=None, timestamps=None) -> BacktestResult:
    n = len(equity)
    ts = np.asarray(timestamps if timestamps is not None else T0 + np.arange(n) * HOUR, dtype=np.int64)
    z = np.zeros(n)
    return BacktestResult(timestamps=ts, equity=np.asarray(equity, float), cash=z + 1, weights=np.zeros((n, A)) + 0.5,
                          positions=np.zeros((n, A)) + 2, trades=B._TradeLog(["S"] * A).frame(), metrics=metrics or {},
                          symbols=[f"S{i}" for i in range(A)], timeframe="1h", fees=z + 3, turnover=z + 4,
                          rewards=z + 5)


@pytest.mark.parametrize("equity, dd", [
    ([100.0, 120.0, 90.0, 120.0, 60.0, 150.0, 135.0], [0.0, 0.0, 0.25, 0.0, 0.5, 0.0, 0.1]),
    ([100.0, 50.0, -5.0, 10.0], [0.0, 0.5, 1.0, 1.0]),  # after ruin: 1
    ([100.0], [0.0]), ([], []),
])
def test_drawdown_is_the_fall_from_the_running_peak_and_one_after_ruin(equity, dd):
    got = result(equity).drawdown
    assert got.dtype == np.float64 and got.shape == (len(equity),)
    np.testing.assert_allclose(got, dd, rtol=1e-15, atol=0)


def test_to_frame_has_one_utc_row_per_bar_and_the_documented_columns():
    res = result([100.0, 120.0, 90.0], A=2)
    df = res.to_frame()
    assert list(df.columns) == ["equity", "cash", "fees", "turnover", "reward", "drawdown", "w:S0", "w:S1",
                                "pos:S0", "pos:S1"]
    assert df.index.name == "time" and str(df.index.tz) == "UTC"
    assert list(df.index) == [pd.Timestamp(T0 + k * HOUR, unit="ms", tz="UTC") for k in range(3)]
    assert (df.dtypes == np.float64).all()
    assert df["equity"].tolist() == [100.0, 120.0, 90.0] and df["drawdown"].tolist() == [0.0, 0.0, 0.25]
    assert (df["cash"].tolist(), df["fees"].tolist(), df["turnover"].tolist(), df["reward"].tolist()) == \
           ([1.0] * 3, [3.0] * 3, [4.0] * 3, [5.0] * 3)
    assert df["w:S1"].tolist() == [0.5] * 3 and df["pos:S0"].tolist() == [2.0] * 3


def test_the_summary_heads_with_the_run_and_lists_every_metric_in_order():
    from factorgym.envs.metrics import compute_metrics

    eq = [100.0, 120.0, 90.0, 126.0]
    ts = T0 + np.arange(4) * 400 * 86_400_000  # 3 x 400 days: not a short span
    m = compute_metrics(eq, bars_per_year=8760.0, timestamps=ts, n_trades=3)
    lines = result(eq, A=2, metrics=m, timestamps=ts).summary().splitlines()
    assert lines[0] == "backtest policy: S0, S1 1h, 2024-01-01 00:00 .. 2027-04-15 00:00 (4 bars)"
    labels = [label for label, _ in B.METRIC_FORMATS.values()]
    assert len(lines) == 1 + len(labels)  # no footnote
    for line, label, key in zip(lines[1:], labels, B.METRIC_FORMATS):
        assert line == f"  {label:<16} {format_metric(key, m.get(key, math.nan)):>14}"
    assert lines[1] == "  total return             26.00%" and lines[7] == "  Calmar                   " + \
        format_metric("calmar", m["cagr"] / 0.25).rjust(6)
    assert lines[-2] == "  final equity             126.00" and lines[-1] == "  span                     1200 d"
    assert lines[12] == "  trades                        3"


def test_a_short_run_marks_its_annualised_figures_and_adds_the_footnote():
    from factorgym.envs.metrics import compute_metrics

    eq = [100.0, 110.0, 105.0, 112.0]
    ts = T0 + np.arange(4) * 36 * 86_400_000  # 108 days
    m = compute_metrics(eq, bars_per_year=365.0, timestamps=ts)
    lines = result(eq, metrics=m, timestamps=ts).summary().splitlines()
    assert lines[-1] == ("  \u2020 annualised from a span of 108 days (< 365): an extrapolation of a part-year, "
                         "not a yearly figure; compare total returns instead")
    marked = {key for key, line in zip(B.METRIC_FORMATS, lines[1:]) if line.endswith("\u2020")}
    assert marked == {"cagr", "ann_volatility", "sharpe", "sortino", "calmar"}  # (turnover is n/a: no array)


def test_an_empty_result_summarises_without_a_span():
    assert result([]).summary().splitlines()[0] == "backtest policy: S0 1h, - (0 bars)"


# ------------------------------------------------------------------ display formats
@pytest.mark.parametrize("key, value, text", [
    ("total_return", 0.1234, "12.34%"), ("total_return", -1.0, "-100.00%"), ("max_drawdown", 0.00004, "0.00%"),
    ("cagr", 0.05, "5.00%"), ("ann_volatility", 1.5, "150.00%"), ("exposure", 0.5, "50.00%"), ("hit_rate", 1.0, "100.00%"),
    ("sharpe", 1.23456, "1.235"), ("sortino", -0.5, "-0.500"), ("calmar", 2.0, "2.000"), ("turnover", 1234.5678, "1234.568"),
    ("fees", 1234567.891, "1,234,567.89"), ("final_equity", -1234.5, "-1,234.50"), ("fees", 0.0, "0.00"),
    ("n_trades", 2.5, "2"), ("n_trades", 3.5, "4"), ("n_trades", 0.0, "0"),  # round half to even
    ("span_days", 2.0, "2 d"), ("span_days", 1.999, "48 h"), ("span_days", 0.0, "0 h"), ("span_days", 400.4, "400 d"),
    ("unknown_key", 0.12345, "0.123"), ("n_bars", 7.0, "7.000"),  # keys without a format: a number
])
def test_format_metric_by_kind(key, value, text):
    assert format_metric(key, value) == text


@pytest.mark.parametrize("value, text", [(math.nan, "n/a"), (math.inf, "inf"), (-math.inf, "-inf")])
@pytest.mark.parametrize("key", ["total_return", "sharpe", "fees", "n_trades", "span_days", "nokey"])
def test_undefined_and_infinite_values_display_as_words_whatever_the_kind(key, value, text):
    assert format_metric(key, value) == text and format_metric(key, value, short_span=True) == text


@pytest.mark.parametrize("key", list(B.METRIC_FORMATS) + ["n_bars"])
def test_the_short_span_dagger_marks_exactly_the_annualised_figures(key):
    from factorgym.envs.metrics import ANNUALISED_KEYS

    text = format_metric(key, 0.25, short_span=True)
    assert text.endswith("\u2020") == (key in ANNUALISED_KEYS)
    assert text.rstrip("\u2020") == format_metric(key, 0.25)  # the same number, only marked
    assert set(ANNUALISED_KEYS) == {"cagr", "ann_volatility", "sharpe", "sortino", "calmar", "turnover"}


def test_span_note_names_the_shortest_short_span_and_is_none_without_one():
    assert span_note([]) is None and span_note([{"span_days": 365.0}, {}, {"span_days": math.nan}]) is None
    note = span_note([{"span_days": 400.0}, {"span_days": 200.4}, {"span_days": 30.6}])
    assert note == ("\u2020 annualised from a span of 31 days (< 365): an extrapolation of a part-year, not a yearly "
                    "figure; compare total returns instead")


# ------------------------------------------------------------------ early end
def test_a_run_ended_early_warns_with_its_status_and_bar_count(caplog):
    t = tensor(T=40)
    prices = np.array(t.prices)
    prices[20:, 0, :4] *= 0.01  # X loses 99% at bar 20: a 2x long is ruined
    ruined = FactorTensor(t.features, prices, t.timestamps, t.symbols, t.feature_names, t.tradable, t.meta)
    ex = ExecutionConfig(taker_fee=0.001, max_leverage=2.0, use_market_rules=False)
    with caplog.at_level(logging.WARNING, logger="factorgym.envs.backtest"):
        res = backtest(ruined, const(2.0, 0.0), mapping="direct", env_kwargs={"long_only": False}, execution=ex,
                       name="lev")
    m = len(res.equity)
    assert res.info["status"] in ("bankrupt", "liquidated") and m < 40 and res.info["end_bar"] == m
    assert f"backtest lev: the episode ended ({res.info['status']}) at bar {m} of 40" in caplog.messages
    for name in ("cash", "weights", "positions", "fees", "turnover", "rewards", "timestamps"):
        assert len(getattr(res, name)) == m, name
    assert not np.isnan(res.equity).any() and not np.isnan(res.cash).any()


def test_an_idle_run_has_undefined_ratios_and_zero_costs_without_warnings():
    """A policy that never trades: a flat cash line. Sharpe/Sortino are 0/0 and Calmar 0/0 (nan, shown
    'n/a'), the hit rate is undefined (never exposed), costs and counts are 0; no numpy warning."""
    res = backtest(tensor(T=10), const(0.0, 0.0), mapping="direct")
    m = res.metrics
    assert (m["total_return"], m["cagr"], m["max_drawdown"], m["fees"], m["turnover"], m["exposure"], m["n_trades"]) \
        == (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    for k in ("sharpe", "sortino", "calmar", "hit_rate"):
        assert math.isnan(m[k]) and format_metric(k, m[k]) == "n/a", k
    assert len(res.trades) == 0 and list(res.trades.columns) == B.TRADE_COLUMNS
    assert (res.equity == 10_000.0).all() and not res.weights.any()


@pytest.mark.parametrize("shift", [-HOUR, HOUR])
def test_a_step_that_ends_on_another_bar_than_the_next_one_stops_the_backtest(shift, monkeypatch):
    """The backtest checks each step's timestamp against the bar it expects (a guard against an env
    that skips or repeats bars): a step reported an hour early or late is an error naming both."""
    from factorgym.envs import CryptoTradingEnv

    step = CryptoTradingEnv.step

    def shifted(self, action):
        obs, r, term, trunc, info = step(self, action)
        return obs, r, term, trunc, {**info, "timestamp": info["timestamp"] + shift}

    monkeypatch.setattr(CryptoTradingEnv, "step", shifted)
    with pytest.raises(RuntimeError, match=rf"^env step 1 ended on bar {T0 + 3 * HOUR + shift}, expected {T0 + 3 * HOUR}$"):
        backtest(tensor(T=8), const(0.1, 0.1), mapping="direct", start=2)
