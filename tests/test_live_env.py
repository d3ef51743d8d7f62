"""LiveTradingEnv + PaperExchange replaying candles == backtest() over the same bars.

The tensor is built offline from candles whose gap bars the store marked (last close carried, volume
0, untradable); the paper exchange's feed leaves those bars out (the exchange never delivers them),
and the loop computes its features online, one closed bar at a time. Observations (hashed), actions
and equity must equal the backtest's at every bar.
"""

from __future__ import annotations

import dataclasses
import hashlib
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from _factor_data import HOUR, random_ohlcv
from factorgym.data_layer.build import align_candles, build_tensor_from_candles
from factorgym.data_layer.factors.online import OnlineFactors
from factorgym.envs.backtest import backtest
from factorgym.envs.config import ExecutionConfig

FACTOR_SET = {"factors": [{"kind": "talib", "name": "RSI", "params": {"timeperiod": 6}},
                          {"kind": "talib", "name": "NATR", "params": {"timeperiod": 5}},
                          {"kind": "custom", "name": "log_return", "params": {"periods": 1}}],
              "normalise": {"method": "expanding", "min_periods": 20, "clip": 4.0}}
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
EXECUTION = ExecutionConfig(taker_fee=0.001, slippage_bps=2.0, half_spread_bps=1.0, impact_coef=0.01,
                            lot_step=0.0001, min_notional=5.0)


def _candles(T: int = 260, seed: int = 3) -> dict[str, pd.DataFrame]:
    """Candles as the store holds them: asset 1 lists late; asset 2 has gap bars marked by the store's
    policy (open = high = low = close = previous close, volume 0, tradable False)."""
    x = random_ohlcv(T, len(SYMBOLS), seed)
    out = {}
    for a, sym in enumerate(SYMBOLS):
        rows = np.arange(40 if a == 1 else 0, T)
        df = pd.DataFrame({"timestamp": rows.astype(np.int64) * HOUR,
                           **{f: x[rows, a, k] for k, f in enumerate(["open", "high", "low", "close", "volume"])}})
        df["tradable"] = True
        if a == 2:
            for gap in (150, 151, 200, 231):
                prev = df.loc[gap - 1, "close"]
                df.loc[gap, ["open", "high", "low", "close", "volume", "tradable"]] = [prev, prev, prev, prev, 0.0, False]
        out[sym] = df
    return out


def _feed(candles):
    """The exchange's feed: raw candles on the grid; the store's gap bars are not delivered."""
    ts, ohlcv, ok = align_candles(candles, "1h")
    return SimpleNamespace(timestamps=ts, prices=np.where(ok[..., None], ohlcv, np.nan), tradable=ok,
                           symbols=list(candles), meta={"timeframe": "1h"})


class LinearPolicy:
    """A fixed random linear policy: deterministic, and it reads every part of the observation."""

    def __init__(self, obs_dim: int, act_dim: int, seed: int = 0) -> None:
        self.m = np.random.default_rng(seed).normal(0, 0.3, (act_dim, obs_dim))

    def __call__(self, obs):
        return np.tanh(self.m @ np.asarray(obs, dtype=np.float64)).astype(np.float32)


def _recording(policy, hashes, actions):
    def act(obs):
        a = policy(obs)
        hashes.append(hashlib.sha256(np.ascontiguousarray(obs, np.float32).tobytes()).hexdigest())
        actions.append(np.asarray(a).copy())
        return a
    return act


def _paper_class(candles_path: str):
    """The paper exchange serving the loop its candles as one panel of all symbols (``ohlcv_panel``),
    as numpy columns per symbol (``ohlcv_arrays``) or as ccxt lists (``fetch_ohlcv`` only),
    counting the calls."""
    from factorgym.envs.live.paper import PaperExchange

    def ohlcv_panel(self, *args, **kwargs):
        self.calls["panel"] += 1
        return PaperExchange.ohlcv_panel(self, *args, **kwargs)

    def ohlcv_arrays(self, *args, **kwargs):
        self.calls["arrays"] += 1
        return PaperExchange.ohlcv_arrays(self, *args, **kwargs)

    def fetch_ohlcv(self, *args, **kwargs):
        self.calls["lists"] += 1
        return PaperExchange.fetch_ohlcv(self, *args, **kwargs)

    def init(self, *args, **kwargs):
        self.calls = {"panel": 0, "arrays": 0, "lists": 0}
        PaperExchange.__init__(self, *args, **kwargs)

    return type("CountingPaper", (PaperExchange,), {
        "__init__": init, "fetch_ohlcv": fetch_ohlcv,
        "ohlcv_panel": ohlcv_panel if candles_path == "panel" else None,
        "ohlcv_arrays": ohlcv_arrays if candles_path in ("panel", "arrays") else None})


FIELDS = ["open", "high", "low", "close", "volume"]


def _live_run(tensor, candles, policy, start, end, window, state_dir, run_id="parity", candles_path="panel"):
    from factorgym.envs.live.live_env import LiveTradingEnv, ReplayClock

    feed = _feed(candles)
    ex = _paper_class(candles_path)(feed, execution=EXECUTION, initial_cash=10_000.0, state_dir=state_dir, run_id=run_id)
    online = OnlineFactors.from_tensor(tensor)
    rows = lambda ts, bar, ok: (online.update(ts, bar, ok), online.tradable.copy())  # noqa: E731
    if ex.now is None:
        ex.advance(int(tensor.timestamps[start]) + HOUR)
    env = LiveTradingEnv(ex, symbols=list(tensor.symbols), feature_names=list(tensor.feature_names), timeframe="1h",
                         window=window, online=rows, clock=ReplayClock(ex),
                         env_kwargs=dict(execution=EXECUTION, initial_cash=10_000.0, mapping="simplex"),
                         market_rules={}, run_id=run_id)
    hashes, actions, equity = [], [], []
    obs, info = env.reset()
    equity.append(info["equity"])
    act = _recording(policy, hashes, actions)
    for _ in range(start + 1, end):
        obs, reward, terminated, truncated, info = env.step(act(obs))
        equity.append(info["equity"])
    return np.array(equity), hashes, actions, ex


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    candles = _candles()
    tensor = build_tensor_from_candles(candles, "1h", FACTOR_SET)
    return candles, tensor


@pytest.mark.parametrize("candles_path", ["panel", "arrays", "lists"])
def test_replay_equals_backtest(market, tmp_path, candles_path):
    """Whichever way the loop reads its candles (one panel, numpy columns per symbol, ccxt lists),
    the replay is the backtest."""
    candles, tensor = market
    window = 4
    start, end = tensor.n_bars - 110, tensor.n_bars - 1
    obs_dim = window * 3 * tensor.n_features + window * 3 + 3 + 3
    policy = LinearPolicy(obs_dim, 4)
    b_hashes, b_actions = [], []
    res = backtest(tensor, _recording(policy, b_hashes, b_actions), start=start, end=end, window=window,
                   mapping="simplex", execution=EXECUTION)
    assert res.info["status"] == "ok" and len(res.equity) == end - start
    assert (~tensor.tradable[start:end, 2]).sum() >= 3  # the gap bars fall inside the replay
    equity, hashes, actions, ex = _live_run(tensor, candles, policy, start, end, window, tmp_path / "state",
                                            candles_path=candles_path)
    assert ex.calls[candles_path] >= end - start
    assert sum(ex.calls.values()) == ex.calls[candles_path]  # (only that path)
    assert hashes == b_hashes[: end - start - 1]
    assert all(np.array_equal(a, b) for a, b in zip(actions, b_actions))
    np.testing.assert_allclose(equity, res.equity, rtol=1e-9, atol=0)
    assert ex.events.count("reconcile") == 0
    assert len(res.trades) > 20  # the policy trades


def test_the_observation_is_the_accounts_whatever_cash_the_policy_trained_with(market, tmp_path):
    """An account that starts with other cash than the training env: every observation (the loop's
    own at reset, the shadow env's after a step) measures equity against the account's start."""
    from factorgym.envs.live.live_env import LiveTradingEnv, ReplayClock

    candles, tensor = market
    window, start = 4, tensor.n_bars - 30
    ex = _paper_class("arrays")(_feed(candles), execution=EXECUTION, initial_cash=2_500.0, state_dir=tmp_path / "s")
    ex.advance(int(tensor.timestamps[start]) + HOUR)
    online = OnlineFactors.from_tensor(tensor)
    env = LiveTradingEnv(ex, symbols=list(tensor.symbols), feature_names=list(tensor.feature_names), timeframe="1h",
                         window=window, online=lambda ts, bar, ok: (online.update(ts, bar, ok), online.tradable.copy()),
                         clock=ReplayClock(ex), env_kwargs=dict(execution=EXECUTION, initial_cash=10_000.0,
                                                                mapping="simplex"), market_rules={})
    policy = LinearPolicy(window * 3 * tensor.n_features + window * 3 + 3 + 3, 4)
    obs, _ = env.reset()
    assert obs[-2] == np.float32(1.0)  # equity / initial cash
    for _ in range(10):
        obs, _, _, _, info = env.step(policy(obs))
        np.testing.assert_array_equal(obs, env._obs())
        assert obs[-2] == np.float32(info["equity"] / 2_500.0)


def test_a_paper_bar_is_two_commits(market, tmp_path):
    """The decision with its orders is one commit, the fill bar's events with the loop's book another."""
    candles, tensor = market
    window, start = 4, tensor.n_bars - 30
    policy = LinearPolicy(window * 3 * tensor.n_features + window * 3 + 3 + 3, 4)
    _, _, _, ex = _live_run(tensor, candles, policy, start, start + 2, window, tmp_path / "state")
    commits = []
    ex.events._db.set_trace_callback(lambda sql: commits.append(sql) if sql.strip().upper() == "COMMIT" else None)
    from factorgym.envs.live.live_env import LiveTradingEnv, ReplayClock

    online = OnlineFactors.from_tensor(tensor)
    env = LiveTradingEnv(ex, symbols=list(tensor.symbols), feature_names=list(tensor.feature_names), timeframe="1h",
                         window=window, online=lambda ts, bar, ok: (online.update(ts, bar, ok), online.tradable.copy()),
                         clock=ReplayClock(ex), env_kwargs=dict(execution=EXECUTION, initial_cash=10_000.0,
                                                                mapping="simplex"), market_rules={}, run_id="parity")
    obs, _ = env.reset()
    commits.clear()
    n_before = ex.events.last_seq
    for _ in range(5):
        obs, *_ = env.step(policy(obs))
    assert len(commits) == 2 * 5
    assert ex.events.last_seq - n_before > 2 * 5  # several events a commit
    assert ex.events.last().kind == "loop_book"


@pytest.mark.parametrize("candles_path", ["arrays", "lists"])
def test_amount_orders_are_sized_at_the_forming_bars_open(candles_path):
    """On an exchange that serves the forming candle, the loop feeds the closed bars and sizes amount
    orders at the forming bar's open, whichever way the candles come (ccxt lists, numpy columns)."""
    from factorgym.envs.layouts import PRICE
    from factorgym.envs.live.live_env import LiveTradingEnv

    A, T, W = 3, 60, 4
    x = random_ohlcv(T, A, 2)
    symbols = SYMBOLS[:A]

    class Exchange:
        id, events = "fake", None

        def load_markets(self, reload=False):
            return {}

        def fetch_ohlcv(self, symbol, timeframe="1h", since=None, limit=None):
            i, lo = symbols.index(symbol), int(since or 0) // HOUR
            return [[k * HOUR, *x[k, i].tolist()] for k in range(lo, min(T, lo + (limit or T)))]

        def fetch_balance(self):
            return {"total": {"USDT": 1_000.0}}

    if candles_path == "arrays":
        def ohlcv_arrays(self, symbol, timeframe="1h", since=None, limit=None):
            rows = np.array(self.fetch_ohlcv(symbol, timeframe, since, limit)).reshape(-1, 6)
            return {"time": rows[:, 0].astype(np.int64), **{f: rows[:, k + 1] for k, f in enumerate(FIELDS)}}
        Exchange.ohlcv_arrays = ohlcv_arrays

    class Clock:
        def now_ms(self):
            return (T - 1) * HOUR + 1  # bar T - 1 is forming

        def wait_for_close(self, bar_ts, tf_ms):
            pass

    fed = []
    env = LiveTradingEnv(Exchange(), symbols=symbols, feature_names=["f"], timeframe="1h", window=W,
                         online=lambda ts, bar, ok: (fed.append(bar.copy()) or bar[:, 3:4] / bar[:, :1], ok),
                         clock=Clock(), env_kwargs={"mapping": "simplex"}, market_rules={}, order_mode="amounts")
    env.reset()
    assert env.bar_ts == (T - 2) * HOUR
    np.testing.assert_array_equal(np.array(fed), x[:T - 1])
    assert env._forming == {i: float(x[T - 1, i, 0]) for i in range(A)}
    orders = env.plan_orders(np.array([0.0, 0.5, 0.3, 0.2], np.float32))
    np.testing.assert_array_equal(env._shadow.core.prices[W, :, PRICE.open], x[T - 1, :, 0])
    assert [o["side"] for o in orders] == ["buy"] * 3 and all(o["amount"] > 0 for o in orders)


def test_fill_bar_record_is_price_records_row_bit_for_bit():
    """The loop's in-place record of the fill bar equals the env's price_records over the two bars
    (carried mark, fill bar): tradable or not, listed or not, zero volume, a bar below the mark."""
    from factorgym.envs.layouts import PRICE, price_records
    from factorgym.envs.live.loop_parts import fill_bar_record

    rng = np.random.default_rng(4)
    A = 6
    for _ in range(300):
        carried = np.where(rng.random(A) < 0.2, 0.0, rng.uniform(50, 150, A))
        carried[rng.random(A) < 0.05] = np.nan
        bar = random_ohlcv(1, A, int(rng.integers(1 << 30)))[0] * rng.uniform(0.5, 1.5)
        bar[rng.random(A) < 0.2, 4] = 0.0
        ok = rng.random(A) < 0.7
        bar[~ok & (rng.random(A) < 0.5)] = np.nan  # (an untradable bar's prices are never read)
        two_ok = np.stack([carried > 0, ok])
        two = np.stack([np.repeat(carried[:, None], 5, axis=1), bar])
        want = price_records(SimpleNamespace(prices=np.where(two_ok[..., None], two, np.nan)), two_ok)[1]
        got = np.full((A, len(PRICE)), 7.0)  # (stale values: every field is written)
        fill_bar_record(got, carried, bar, ok)
        assert np.array_equal(got.view(np.uint64), want.view(np.uint64)), (got, want)
        strided = np.full((A, 2 * len(PRICE)), 7.0)[:, ::2]  # (not C-contiguous)
        fill_bar_record(strided, carried, bar, ok)
        assert np.array_equal(np.ascontiguousarray(strided).view(np.uint64), want.view(np.uint64))


def test_a_paced_run_commits_its_log_before_it_sleeps(monkeypatch):
    """``--speed``: the loop commits the exchange's log (a group-committing log holds batches back)
    before each wait, so a paced run is durable while it waits."""
    from factorgym.agents.live import runner

    calls = []

    class Exchange:
        events = None

        def commit(self):
            calls.append("commit")

    class Env:
        exchange, clock, symbols, last_decision_ms = Exchange(), None, ["A/USDT"], 0.0
        bar_ts = 0

        def reset(self, options=None):
            return np.zeros(3, np.float32), {"equity": 1.0}

        def step(self, action):
            calls.append("step")
            self.bar_ts += HOUR
            return np.zeros(3, np.float32), 0.0, False, False, {"equity": 1.0, "timestamp": self.bar_ts, "cash": 1.0,
                                                               "weights": np.zeros(1)}

    monkeypatch.setattr(runner.time, "sleep", lambda s: calls.append("sleep"))
    result = runner.run_loop(Env(), lambda obs: np.zeros(2), max_bars=3, speed=1e-3, out=None)
    assert result.bars == 3
    assert calls == ["step", "commit", "sleep"] * 3


# ---------------------------------------------------------------------- the loop on a faulty ccxt exchange
KEY = "PLANTEDKEYlive7Qw2Er9Ty4Ui0Op3As6"
SECRET = "PLANTEDSECRETlive1Zx5Cv8Bn2Mm4Ll7"


class FakeClock:
    """Moves the fake exchange's "now" to just after each bar's close instead of sleeping."""

    def __init__(self, fx) -> None:
        self.fx = fx

    def now_ms(self) -> int:
        return int(self.fx.now_ms)

    def wait_for_close(self, bar_ts: int, tf_ms: int) -> None:
        self.fx.now_ms = max(self.fx.now_ms, bar_ts + tf_ms + 60_000)


def test_live_loop_under_20_percent_faults_never_doubles_an_order(tmp_path, monkeypatch, caplog):
    import logging

    pytest.importorskip("ccxt")
    from factorgym.agents.live.ccxt_exchange import CcxtExchange
    from factorgym.agents.live.runner import run_loop
    from factorgym.envs.live.live_env import LiveTradingEnv
    from tests.fake_exchange import FakeExchange

    symbols = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("FACTORGYM_BINANCE_API_KEY", KEY)
    monkeypatch.setenv("FACTORGYM_BINANCE_SECRET", SECRET)
    faults = ("429", "500", "503", "504", "timeout", "disconnect")
    with FakeExchange(fault_rate=0.0, timeout_sleep=0.6, fault_kinds=faults) as fx:
        fx.open_account(api_key=KEY, secret=SECRET, balances={"USDT": 100_000})
        ex = CcxtExchange("binance", base_url=fx.url, run_id="live1", state_dir=tmp_path / "state", timeout_ms=300,
                          backoff=0.01, retries=8)
        online = OnlineFactors(FACTOR_SET, symbols)
        env = LiveTradingEnv(ex, symbols=symbols, feature_names=online.feature_names, timeframe="1h", window=4,
                             online=lambda ts, bar, ok: (online.update(ts, bar, ok), online.tradable.copy()),
                             clock=FakeClock(fx), env_kwargs=dict(mapping="simplex", initial_cash=100_000.0),
                             history=200, fill_timeout_s=2.0, poll_s=0.05)
        fx.fault_rate = 0.2
        policy = LinearPolicy(4 * 3 * 3 + 4 * 3 + 6, 4, seed=1)
        result = run_loop(env, policy, max_bars=12, out=None)
        fx.fault_rate = 0.0
        assert result.bars == 12 and sum(fx.fault_counts.values()) > 10
        book = fx.account.book
        assert book and all(len(ids) == 1 for ids in book.values())  # no client id booked twice
        intents = [e.data["client_id"] for e in ex.events if e.kind == "order_intent"]
        assert sorted(set(intents)) == sorted(book) or set(book) <= set(intents)
        ends = {e.data["client_id"] for e in ex.events if e.kind in ("order_accepted", "order_rejected", "order_reconciled")}
        assert set(intents) <= ends  # every intended order ended filled or rejected with a reason
        ex.close()
    for secret in (KEY, SECRET):
        assert secret not in caplog.text
        for path in tmp_path.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path


# ---------------------------------------------------------------------- a crash before the loop's book is saved
class _NoGroupCommits:
    """The paper exchange without ``batch`` (as a ccxt exchange): a bar's fills and the loop's
    ``loop_book`` are separate commits, so a crash can fall between them."""

    id = "paper"

    def __init__(self, ex) -> None:
        self._ex = ex

    def __getattr__(self, name):
        if name == "batch":
            raise AttributeError(name)
        return getattr(self._ex, name)


def _sharpe_env(tensor, candles, state, start, crash_at=None):
    from factorgym.envs.live.live_env import LiveTradingEnv, ReplayClock
    from factorgym.envs.live.paper import PaperExchange

    ex = PaperExchange(_feed(candles), execution=EXECUTION, initial_cash=10_000.0, state_dir=state, durable=False)
    if ex.now is None:
        ex.advance(int(tensor.timestamps[start]) + HOUR)
    online = OnlineFactors.from_tensor(tensor)

    class Env(LiveTradingEnv):
        steps = 0

        def _event(self, kind, ts, **data):
            if kind == "loop_book":
                Env.steps += 1
                if Env.steps == crash_at:
                    raise KeyboardInterrupt("killed before the loop's book was written")
            super()._event(kind, ts, **data)

    return Env(_NoGroupCommits(ex), symbols=list(tensor.symbols), feature_names=list(tensor.feature_names),
               timeframe="1h", window=4, online=lambda ts, bar, ok: (online.update(ts, bar, ok), online.tradable.copy()),
               clock=ReplayClock(ex), market_rules={},
               env_kwargs=dict(execution=EXECUTION, initial_cash=10_000.0, mapping="simplex",
                               reward="differential_sharpe"))


def test_a_crash_before_the_loops_book_keeps_the_sharpe_statistics(market, tmp_path):
    """Killed after a bar's fills were logged but before the loop saved its book: the restarted run's
    rewards (differential Sharpe: statistics carried across bars) and infos equal an uninterrupted run's."""
    from factorgym.agents.live.runner import last_book

    candles, tensor = market
    start, n = tensor.n_bars - 30, 12
    policy = LinearPolicy(4 * 3 * tensor.n_features + 4 * 3 + 6, 4, seed=2)
    keys = ("equity", "cash", "fees", "turnover", "slippage_cost", "status")

    def run(env, steps, out):
        book = last_book(env.exchange)
        obs, _ = env.reset(options={"book": book} if book else None)
        for _ in range(steps):
            obs, reward, _, _, info = env.step(policy(obs))
            out.append((reward, *(info[k] for k in keys)))

    ref: list = []
    env = _sharpe_env(tensor, candles, tmp_path / "ref", start)
    run(env, n, ref)
    env.exchange.close()
    got: list = []
    env = _sharpe_env(tensor, candles, tmp_path / "crash", start, crash_at=5)
    with pytest.raises(KeyboardInterrupt):
        run(env, n, got)
    env.exchange.close()
    assert len(got) == 4  # the 5th bar filled and was logged, its loop book was not
    env = _sharpe_env(tensor, candles, tmp_path / "crash", start)
    run(env, n - 5, got)
    env.exchange.close()
    assert [r for r, *_ in ref] != [0.0] * n
    assert got[:4] == ref[:4] and got[4:] == ref[5:]


def test_feed_row_kernel_is_the_numpy_window_shift_it_replaced():
    """``feed_row_nb`` (one compiled call a bar) against the numpy statements it replaced, on random
    windows with NaN, infinities, float32 overflow, untradable assets and zero volumes."""
    from factorgym.envs.live.paper_kernel import feed_row_nb

    rng = np.random.default_rng(7)
    specials = np.array([np.nan, np.inf, -np.inf, 1e39, -1e39, 3.4028235e38, 1e-46, 0.0])
    for case in range(200):
        W, A, F = int(rng.integers(1, 6)), int(rng.integers(1, 5)), int(rng.integers(1, 4))
        feat = rng.normal(size=(W + 1, A, F)).astype(np.float32)
        mask = (rng.random((W + 1, A)) < 0.7).astype(np.float32)
        row = rng.normal(size=(A, F)) * 10.0 ** rng.integers(-3, 40)
        hit = rng.random((A, F)) < 0.3
        row[hit] = rng.choice(specials, size=int(hit.sum()))
        tradable = rng.random(A) < 0.6
        bar = rng.uniform(1, 100, (A, 5))
        last_close, last_volume = rng.uniform(1, 100, A), rng.uniform(0, 5, A)
        # the numpy statements of LiveTradingEnv._feed before the kernel
        want_feat, want_mask = feat.copy(), mask.copy()
        with np.errstate(over="ignore"):  # (1e39 cast: inf, then masked)
            feats = np.asarray(row, dtype=np.float32)
        want_feat[:-1] = want_feat[1:]
        want_mask[:-1] = want_mask[1:]
        want_feat[-1] = np.where(np.isfinite(feats) & tradable[:, None], feats, np.float32(0))
        want_mask[-1] = tradable
        want_close = np.where(tradable, bar[:, 3], last_close)
        want_volume = np.where(tradable, bar[:, 4], last_volume)
        close, volume = np.empty(A), np.empty(A)
        feed_row_nb(feat, mask, row, tradable, bar, last_close, last_volume, close, volume)
        np.testing.assert_array_equal(feat, want_feat, err_msg=f"case {case}")
        np.testing.assert_array_equal(mask, want_mask, err_msg=f"case {case}")
        np.testing.assert_array_equal(close, want_close)
        np.testing.assert_array_equal(volume, want_volume)
        assert not np.signbit(feat[-1][~np.isfinite(feats) | ~tradable[:, None]]).any()  # +0, as np.where's
